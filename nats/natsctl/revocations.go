package natsctl

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/auth"
)

// Refusal reasons, as the gateway puts them in an HTTP refusal's body
// ({"reason": …}) before an upgrade.
const (
	ReasonRevoked     = "token_revoked"
	ReasonBanned      = "banned"
	ReasonUnavailable = "revocation_list_unavailable"
)

// Entry kinds in the bucket.
const (
	kindJTI  = "jti"  // one token, by its jti claim
	kindUser = "user" // every token of a user issued before a time
	kindBan  = "ban"  // a user refused until a time
)

// entry is one revocation or ban. It is stored under its own key (see
// key) with a TTL that ends when it stops mattering, so the bucket never
// needs cleaning and a key is never updated (per-key TTLs are set when a
// key is created).
type entry struct {
	Kind string `json:"kind"`
	JTI  string `json:"jti,omitempty"`
	User string `json:"user,omitempty"`
	// Before (unix ms): tokens of User whose iat is earlier are revoked,
	// and so are its tokens without iat (kindUser).
	Before int64 `json:"before_ms,omitempty"`
	// Until (unix ms): the entry applies until then (the tokens' latest
	// exp; the end of a ban).
	Until int64 `json:"until_ms"`
	// Code and Reason close a banned user's connections (kindBan): a
	// gateway that learns of the ban from the bucket before the
	// Disconnect request closes them as the request would.
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// key names e in the bucket. KV keys allow only [-/_=.A-Za-z0-9], and a
// jti or sub may hold anything: both are base64url-encoded. A user
// revocation or ban carries its time so that a later one is a new key.
func (e entry) key() string {
	enc := base64.RawURLEncoding.EncodeToString
	switch e.Kind {
	case kindJTI:
		return kindJTI + "." + enc([]byte(e.JTI))
	case kindUser:
		return kindUser + "." + enc([]byte(e.User)) + "." + strconv.FormatInt(e.Before, 10)
	default:
		return kindBan + "." + enc([]byte(e.User)) + "." + strconv.FormatInt(e.Until, 10)
	}
}

func (e entry) valid() error {
	switch {
	case e.Kind == kindJTI && e.JTI == "", e.Kind != kindJTI && e.User == "":
		return errors.New("natsctl: revocation names no token or user")
	case e.Kind != kindJTI && e.Kind != kindUser && e.Kind != kindBan:
		return fmt.Errorf("natsctl: unknown revocation kind %q", e.Kind)
	case e.Until <= 0:
		return errors.New("natsctl: revocation without an end")
	}
	return nil
}

// RevocationsConfig configures a revocation list.
type RevocationsConfig struct {
	Conn *nats.Conn
	// Bucket is the KV bucket (default "<prefix>_revocations" via Prefix).
	Bucket string
	Prefix string // default "fabric"
	// Replicas of the bucket (default 1; 3 in a three-node cluster).
	Replicas int
	// OnChange is called after an entry arrived that may refuse open
	// connections (the gateway then closes them). Called from the watch
	// goroutine, one at a time. SetOnChange sets it later.
	OnChange func()
	Logger   *slog.Logger
}

// Revocations is a gateway's copy of the cluster's revocation list: a
// JetStream KV bucket watched from the start, so every entry any gateway
// or backend writes is applied here within milliseconds, and the list is
// read again in full after a restart.
//
// Refusal answers from memory: no lookup on the bus per upgrade or join.
// Before the first full read it fails closed (ReasonUnavailable); while
// NATS is away it keeps the last list it read (entries written meanwhile
// arrive when the watch resumes).
type Revocations struct {
	cfg RevocationsConfig
	kv  jetstream.KeyValue
	log *slog.Logger

	synced atomic.Bool
	mu     sync.RWMutex
	jtis   map[uint64]int64 // auth.JTIKey(jti) → until (ms)
	before map[string]span  // user → tokens issued before, until
	bans   map[string]ban   // user → its ban

	onChange atomic.Pointer[func()]

	cancel context.CancelFunc
	done   chan struct{}
}

// SetOnChange replaces RevocationsConfig.OnChange (for a gateway built
// after the list was opened, as the gateway needs the list to start).
func (r *Revocations) SetOnChange(fn func()) { r.onChange.Store(&fn) }

type span struct{ before, until int64 }

type ban struct {
	until  int64
	code   int
	reason string
}

// OpenRevocations creates (or reuses) the bucket, reads it whole and keeps
// watching it. It returns once the list was read, or ctx's error.
func OpenRevocations(ctx context.Context, cfg RevocationsConfig) (*Revocations, error) {
	if cfg.Conn == nil {
		return nil, errors.New("natsctl: no NATS connection")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "fabric"
	}
	if cfg.Bucket == "" {
		cfg.Bucket = cfg.Prefix + "_revocations"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Fabric: revoked tokens and banned users (docs/cluster-control.md)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    max(1, cfg.Replicas),
		// Per-key TTLs: each entry goes when its tokens have expired.
		LimitMarkerTTL: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("natsctl: revocation bucket %s: %w", cfg.Bucket, err)
	}
	r := newRevocations(cfg)
	r.kv = kv
	wctx, cancel := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("natsctl: watch %s: %w", cfg.Bucket, err)
	}
	r.cancel = cancel
	r.done = make(chan struct{})
	synced := make(chan struct{})
	go r.run(wctx, w, synced)
	select {
	case <-synced:
		return r, nil
	case <-ctx.Done():
		r.Close()
		return nil, fmt.Errorf("natsctl: reading %s: %w", cfg.Bucket, ctx.Err())
	}
}

func newRevocations(cfg RevocationsConfig) *Revocations {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Revocations{cfg: cfg, log: cfg.Logger, jtis: map[uint64]int64{}, before: map[string]span{}, bans: map[string]ban{}}
	r.SetOnChange(cfg.OnChange)
	return r
}

// run follows the bucket until ctx ends. A watch does not outlive every
// outage: after a reconnect its consumer may be gone (a restarted server
// keeps no ephemeral consumer) and it then delivers nothing more, without
// closing. So the watch is started again after every reconnect of the
// connection, and whenever it ends: it replays the whole list (entries
// apply idempotently), which is also how entries written during the
// outage arrive.
func (r *Revocations) run(ctx context.Context, w jetstream.KeyWatcher, synced chan struct{}) {
	defer close(r.done)
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		reconnects := r.cfg.Conn.Stats().Reconnects
		if w != nil {
			r.follow(ctx, w, synced, reconnects, prune.C)
			_ = w.Stop()
			w = nil
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond): // no tight loop while NATS is away
		}
		var err error
		if w, err = r.kv.WatchAll(ctx, jetstream.IgnoreDeletes()); err != nil {
			r.log.Debug("revocation list: watching again failed; retrying", "err", err)
			w = nil
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// reconnectCheck is how often a watch looks for a reconnect of its
// connection (a counter read: free).
const reconnectCheck = 100 * time.Millisecond

// follow applies w's entries until ctx ends, w ends, or the connection
// reconnected since reconnects was read. The entries a new watch replays
// call OnChange once, after the replay.
func (r *Revocations) follow(ctx context.Context, w jetstream.KeyWatcher, synced chan struct{}, reconnects uint64, prune <-chan time.Time) {
	check := time.NewTicker(reconnectCheck)
	defer check.Stop()
	replaying, applied := true, false
	changed := func() {
		if fn := r.onChange.Load(); r.synced.Load() && fn != nil && *fn != nil {
			(*fn)()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			if r.cfg.Conn.Stats().Reconnects != reconnects {
				return
			}
		case <-prune:
			r.prune(time.Now().UnixMilli())
		case kve, ok := <-w.Updates():
			if !ok {
				return
			}
			if kve == nil { // the values stored when the watch began are all in
				replaying = false
				if r.synced.CompareAndSwap(false, true) {
					close(synced)
				} else if applied {
					changed()
				}
				continue
			}
			var e entry
			if err := json.Unmarshal(kve.Value(), &e); err != nil || e.valid() != nil {
				r.log.Warn("ignoring a malformed revocation entry", "key", kve.Key())
				continue
			}
			if r.apply(e) {
				if replaying {
					applied = true
				} else {
					changed()
				}
			}
		}
	}
}

// apply merges e into the list; it reports whether e is in force now.
func (r *Revocations) apply(e entry) bool {
	now := time.Now().UnixMilli()
	if e.Until <= now {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case kindJTI:
		k := auth.JTIKey(e.JTI)
		r.jtis[k] = max(r.jtis[k], e.Until)
	case kindUser:
		// The latest cut-off covers the earlier ones; kept until the
		// latest end of any of them (conservative: never shorter).
		s := r.before[e.User]
		r.before[e.User] = span{before: max(s.before, e.Before), until: max(s.until, e.Until)}
	case kindBan:
		if b := r.bans[e.User]; e.Until > b.until {
			r.bans[e.User] = ban{until: e.Until, code: e.Code, reason: e.Reason}
		}
	}
	return true
}

func (r *Revocations) prune(now int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, u := range r.jtis {
		if u <= now {
			delete(r.jtis, k)
		}
	}
	for k, s := range r.before {
		if s.until <= now {
			delete(r.before, k)
		}
	}
	for k, b := range r.bans {
		if b.until <= now {
			delete(r.bans, k)
		}
	}
}

// Refusal says why a connection token may not be used now: "" when it
// may, else ReasonBanned (with the ban's end), ReasonRevoked, or
// ReasonUnavailable while the list was never read. sub is the token's
// subject, jti its id as auth.JTIKey (0 when none), iat its issue time (zero when the
// token has none: a user revocation then covers it, as it cannot be shown
// to be newer). It reads memory only.
func (r *Revocations) Refusal(sub string, jti uint64, iat time.Time) (string, time.Time) {
	if !r.synced.Load() {
		return ReasonUnavailable, time.Time{}
	}
	now := time.Now().UnixMilli()
	r.mu.RLock()
	defer r.mu.RUnlock()
	if b := r.bans[sub]; b.until > now {
		return ReasonBanned, time.UnixMilli(b.until)
	}
	if jti != 0 {
		if u := r.jtis[jti]; u > now {
			return ReasonRevoked, time.Time{}
		}
	}
	if s, ok := r.before[sub]; ok && s.until > now && (iat.IsZero() || iat.UnixMilli() < s.before) {
		return ReasonRevoked, time.Time{}
	}
	return "", time.Time{}
}

// BanClose is how sub's connections are closed while it is banned: the
// code and reason its Disconnect gave (0, "" when not banned).
func (r *Revocations) BanClose(sub string) (int, string) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b := r.bans[sub]
	return b.code, b.reason
}

// add writes e to the bucket with a TTL ending at e.Until, and applies it
// here at once. Writing the same entry twice is not an error.
func (r *Revocations) add(ctx context.Context, e entry) error {
	if err := e.valid(); err != nil {
		return err
	}
	ttl := time.Until(time.UnixMilli(e.Until))
	if ttl <= 0 {
		return nil // already over: nothing to refuse
	}
	// The server keeps TTLs in whole seconds, at least one.
	ttl = max(time.Second, ttl.Round(time.Second)+time.Second)
	b, _ := json.Marshal(e)
	_, err := r.kv.Create(ctx, e.key(), b, jetstream.KeyTTL(ttl))
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("natsctl: storing revocation: %w", err)
	}
	r.apply(e)
	return nil
}

// Close stops watching.
func (r *Revocations) Close() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
}
