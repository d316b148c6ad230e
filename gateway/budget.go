package gateway

import (
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Budgets bound what one token (one user) or one source address can cost a
// gateway, whatever it does with its connections: docs/limits.md lists each
// with its default and the memory it bounds.

// users counts, per authenticated user (the token's sub), the connections,
// LongPoll sessions and joined channels it holds on this gateway. Entries
// exist only while the user has a connection here.
type users struct {
	mu sync.Mutex
	m  map[string]*userBudget
}

// userBudget is one user's counts. Connections are counted under
// users.mu (they create and drop the entry); channels change with every
// join and leave, so they are an atomic.
type userBudget struct {
	conns, longPolls int32 // under users.mu
	channels         atomic.Int32
}

// acquire counts a new connection of sub, or says which budget refuses it
// ("" when admitted).
func (u *users) acquire(sub string, longPoll bool, lim *Limits) (*userBudget, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b := u.m[sub]
	if b == nil {
		b = new(userBudget)
		if u.m == nil {
			u.m = make(map[string]*userBudget)
		}
		u.m[sub] = b
	}
	switch {
	case lim.MaxConnectionsPerUser > 0 && int(b.conns) >= lim.MaxConnectionsPerUser:
		u.dropIfIdle(sub, b)
		return nil, "too_many_connections_for_user"
	case longPoll && lim.MaxLongPollPerUser > 0 && int(b.longPolls) >= lim.MaxLongPollPerUser:
		u.dropIfIdle(sub, b)
		return nil, "too_many_longpoll_sessions_for_user"
	}
	b.conns++
	if longPoll {
		b.longPolls++
	}
	return b, ""
}

func (u *users) release(sub string, b *userBudget, longPoll bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b.conns--
	if longPoll {
		b.longPolls--
	}
	u.dropIfIdle(sub, b)
}

func (u *users) dropIfIdle(sub string, b *userBudget) {
	if b.conns <= 0 && u.m[sub] == b {
		delete(u.m, sub)
	}
}

// sourceKey is the address a per-source budget is kept for: the client's
// IPv4 address, or the /64 prefix of an IPv6 one (one host usually has a
// whole /64, so counting single IPv6 addresses would bound nothing).
func sourceKey(r *http.Request) string {
	ip := remoteIP(r)
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// failures is the per-source budget of refused credentials: each source
// may fail authentication at a steady rate (a client with an expired token
// retrying with backoff); past it, its attempts are refused before their
// token is verified, for as long as it keeps going. Valid clients never
// spend it, and a flood from one source never spends theirs.
type failures struct {
	mu sync.Mutex
	m  map[string]*failBucket
}

type failBucket struct {
	tokens float64
	last   time.Time
}

// maxFailureSources bounds the table: past it, sources idle long enough to
// have a full bucket again are forgotten, and if none is, a new source is
// not tracked (its failures are still verified and refused, just not
// throttled).
const maxFailureSources = 1 << 16

// blocked reports whether key has no failures left (refuse without
// verifying).
func (f *failures) blocked(key string, rate float64, burst int, now time.Time) bool {
	if rate <= 0 {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.m[key]
	if b == nil {
		return false
	}
	b.refill(rate, burst, now)
	return b.tokens < 1
}

// fail spends one of key's failures.
func (f *failures) fail(key string, rate float64, burst int, now time.Time) {
	if rate <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.m[key]
	if b == nil {
		if f.m == nil {
			f.m = make(map[string]*failBucket)
		}
		if len(f.m) >= maxFailureSources {
			f.sweep(rate, burst, now)
			if len(f.m) >= maxFailureSources {
				return
			}
		}
		b = &failBucket{tokens: float64(max(1, burst)), last: now}
		f.m[key] = b
	}
	b.refill(rate, burst, now)
	if b.tokens >= 1 {
		b.tokens--
	}
}

func (f *failures) sweep(rate float64, burst int, now time.Time) {
	for k, b := range f.m {
		if b.refill(rate, burst, now); b.tokens >= float64(max(1, burst)) {
			delete(f.m, k)
		}
	}
}

func (b *failBucket) refill(rate float64, burst int, now time.Time) {
	if now.After(b.last) {
		b.tokens = min(float64(max(1, burst)), b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
	}
}

// sampledLog writes at most one line per interval for an event that an
// attacker can repeat at will (refused connections), with the number of
// occurrences the previous lines left out: one line each would let a
// flood of bad tokens flood the logs too.
type sampledLog struct {
	next       atomic.Int64 // unix nanoseconds before which nothing is logged
	suppressed atomic.Uint64
}

const logSampleInterval = 10 * time.Second

func (s *sampledLog) log(l *slog.Logger, msg string, attrs ...any) {
	now := time.Now().UnixNano()
	next := s.next.Load()
	if now < next || !s.next.CompareAndSwap(next, now+int64(logSampleInterval)) {
		s.suppressed.Add(1)
		return
	}
	if n := s.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed_since_last", n)
	}
	l.Info(msg, attrs...)
}
