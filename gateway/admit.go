package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/internal/auth"
)

// Admission is everything decided before a connection is accepted: origin,
// capacity, credentials. Refusals are HTTP statuses before the upgrade
// (phoenix.js backs off on a failed handshake, but reconnects at once after
// an accepted-then-closed one), and no log line ever carries a token.

// AuthConfig configures connection authentication.
type AuthConfig struct {
	// Verifier checks connection tokens; nil means anonymous mode (every
	// join allowed; the caller restricts that to loopback).
	Verifier *auth.Verifier
	// AllowQueryToken accepts the token from the `token` query parameter
	// (phoenix.js params). Tokens in URLs end up in access logs; operators
	// who can use authToken turn this off.
	AllowQueryToken bool
	// Grants are extra patterns granted to every authenticated user
	// ("user:{sub}"), from the namespace config.
	Grants auth.Grants
	// Leeway is added to a token's exp before the connection is closed.
	Leeway time.Duration
}

// Limits protect the gateway from any one client or address.
type Limits struct {
	MaxConnections       int     // per gateway; over: 503 + Retry-After (0: unlimited)
	MaxConnectionsPerIP  int     // over: 429 + Retry-After (0: unlimited)
	MaxPendingHandshakes int     // upgrades in progress; over: 503 (0: unlimited)
	JoinRate, PushRate   float64 // per connection per second (0: unlimited)
	JoinBurst, PushBurst int
	// AcceptRate admits at most this many new connections (WebSocket
	// upgrades and LongPoll sessions) per second, in bursts of up to
	// AcceptBurst (at least 1); over: 503 + Retry-After: 1 (0: off).
	AcceptRate  float64
	AcceptBurst int
}

// refusal is an HTTP answer before the upgrade.
type refusal struct {
	status     int
	reason     string
	retryAfter int // seconds; 0: no header
}

func (r *refusal) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	if r.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(r.retryAfter))
	}
	w.WriteHeader(r.status)
	json.NewEncoder(w).Encode(map[string]string{"reason": r.reason})
}

// originAllowed checks the Origin header against the allow-list (exact
// scheme://host[:port], or "*"). No Origin (non-browser clients) is allowed:
// cross-site hijacking needs a browser, and browsers always send it.
func originAllowed(allowed []string, origin string) bool {
	if len(allowed) == 0 || origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	norm := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, a := range allowed {
		if a == "*" || strings.EqualFold(strings.TrimRight(a, "/"), norm) {
			return true
		}
	}
	return false
}

// ipCounter counts open connections per remote address.
type ipCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *ipCounter) acquire(ip string, max int) bool {
	if max <= 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	if c.n[ip] >= max {
		return false
	}
	c.n[ip]++
	return true
}

func (c *ipCounter) release(ip string, max int) {
	if max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[ip]--; c.n[ip] <= 0 {
		delete(c.n, ip)
	}
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// policy is a connection's authorization: its token's grants merged with
// the namespace grants bound to its subject, plus per-join tokens.
type policy struct {
	grants   auth.Grants
	sub      string
	verifier *auth.Verifier
}

func (p *policy) CanJoin(topic string) bool    { return p.grants.CanJoin(topic) }
func (p *policy) CanPublish(topic string) bool { return p.grants.CanPublish(topic) }

// CanJoinWithToken admits a join the connection's grants do not cover when
// its params carry a per-join token (typ "join") naming exactly this topic
// and, when it names a user, this connection's user.
func (p *policy) CanJoinWithToken(topic, token string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := p.verifier.Verify(ctx, token)
	if err != nil || !c.IsType(auth.TypeJoin) || c.Channel != topic {
		return false
	}
	return c.Subject == "" || c.Subject == p.sub
}

// authenticate finds and verifies the connection token. It returns the
// policy (nil in anonymous mode) and the claims.
func (g *Gateway) authenticate(r *http.Request) (*policy, *auth.Claims, *refusal) {
	a := g.cfg.Auth
	if a.Verifier == nil {
		return nil, nil, nil
	}
	tok, err := auth.FromRequest(r, a.AllowQueryToken)
	if err != nil {
		return nil, nil, &refusal{status: http.StatusUnauthorized, reason: auth.Reason(err)}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	claims, err := a.Verifier.Verify(ctx, tok)
	if err == nil && !claims.IsType(auth.TypeConnect) {
		err = auth.ErrInvalidToken // a join or publisher token is not a connection token
	}
	if err != nil {
		g.cfg.Logger.Info("connection refused", "remote", r.RemoteAddr, "reason", auth.Reason(err))
		return nil, nil, &refusal{status: http.StatusUnauthorized, reason: auth.Reason(err)}
	}
	return &policy{
		grants:   claims.Grants().Merge(a.Grants.For(claims.Subject)),
		sub:      claims.Subject,
		verifier: a.Verifier,
	}, claims, nil
}

// admit runs every pre-upgrade check. On success release must be called
// when the connection ends (or the upgrade fails).
func (g *Gateway) admit(r *http.Request) (pol *policy, claims *auth.Claims, release func(), ref *refusal) {
	if !originAllowed(g.cfg.AllowedOrigins, r.Header.Get("Origin")) {
		g.refused.origin.Add(1)
		g.cfg.Logger.Info("connection refused: origin not allowed", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		return nil, nil, nil, &refusal{status: http.StatusForbidden, reason: "origin_not_allowed"}
	}
	lim := g.cfg.Limits
	if !g.accept.allow(lim.AcceptRate, lim.AcceptBurst, time.Now()) {
		g.refused.acceptRate.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 1}
	}
	if lim.MaxPendingHandshakes > 0 && g.pending.Add(1) > int64(lim.MaxPendingHandshakes) {
		g.pending.Add(-1)
		g.refused.overload.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 1}
	} else if lim.MaxPendingHandshakes <= 0 {
		g.pending.Add(1)
	}
	defer g.pending.Add(-1)
	if lim.MaxConnections > 0 && g.open.Load() >= int64(lim.MaxConnections) {
		g.refused.overload.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 5}
	}
	ip := remoteIP(r)
	if !g.perIP.acquire(ip, lim.MaxConnectionsPerIP) {
		g.refused.perIP.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusTooManyRequests, reason: "too_many_connections", retryAfter: 5}
	}
	pol, claims, ref = g.authenticate(r)
	if ref != nil {
		g.perIP.release(ip, lim.MaxConnectionsPerIP)
		g.refused.auth.Add(1)
		return nil, nil, nil, ref
	}
	g.open.Add(1)
	if lim.MaxConnectionsPerIP <= 0 {
		// Nothing per connection to remember: one shared func, where a
		// ticket would cost every connection 48 bytes for its lifetime.
		// Each admitted connection calls release exactly once (its
		// session's close, or the failed upgrade).
		return pol, claims, g.releaseOpen, nil
	}
	t := &ticket{g: g, ip: ip}
	return pol, claims, t.release, nil
}

// ticket is an admitted connection's claim on the gateway's counters; it
// is held for the connection's lifetime, so it is kept small.
type ticket struct {
	g    *Gateway
	ip   string
	done atomic.Bool
}

func (t *ticket) release() {
	if t.done.Swap(true) {
		return
	}
	t.g.open.Add(-1)
	if t.ip != "" {
		t.g.perIP.release(t.ip, t.g.cfg.Limits.MaxConnectionsPerIP)
	}
}

// refusals counts connections refused before the upgrade, by cause.
type refusals struct {
	origin, overload, perIP, auth, acceptRate atomic.Uint64
}

// snapshot is Stats.Refused.
func (r *refusals) snapshot() map[string]uint64 {
	return map[string]uint64{
		"origin": r.origin.Load(), "overload": r.overload.Load(),
		"per_ip": r.perIP.Load(), "auth": r.auth.Load(), "accept_rate": r.acceptRate.Load(),
	}
}

// acceptBucket is the gateway-wide token bucket of new connections: it
// holds up to burst tokens and refills at rate per second; every admission
// attempt past the origin check takes one. A connect storm (a gateway
// restart elsewhere, a thundering herd) is then spread out by the clients'
// backoff instead of queueing TLS, upgrades and token checks without bound.
type acceptBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func (b *acceptBucket) allow(rate float64, burst int, now time.Time) bool {
	if rate <= 0 {
		return true
	}
	capacity := float64(max(1, burst))
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.last.IsZero():
		b.tokens, b.last = capacity, now
	case now.After(b.last):
		b.tokens = min(capacity, b.tokens+now.Sub(b.last).Seconds()*rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

var errRefused = errors.New("gateway: connection refused")

// PendingHandshakes is the number of connections being admitted right now.
func (g *Gateway) PendingHandshakes() int { return int(g.pending.Load()) }
