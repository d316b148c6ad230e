package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/auth"
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
	// Leeway is added to a token's exp before the connection is closed;
	// negative means none (auth.Config.Leeway's convention).
	Leeway time.Duration
	// Gate, when set, refuses revoked tokens and banned users at every
	// upgrade, LongPoll request and join (see control.go).
	Gate Gate
}

// Limits protect the gateway from any one client, user or address.
type Limits struct {
	MaxConnections int // per gateway; over: 503 + Retry-After (0: unlimited)
	// MaxConnectionsPerIP counts connections per source: an IPv4 address,
	// or an IPv6 /64. Over: 429 + Retry-After (0: unlimited).
	MaxConnectionsPerIP  int
	MaxPendingHandshakes int     // upgrades in progress; over: 503 (0: unlimited)
	JoinRate, PushRate   float64 // per connection per second (0: unlimited)
	JoinBurst, PushBurst int
	// PushBytesRate bounds the payload bytes one connection may push per
	// second, in bursts of PushBytesBurst (0: unlimited).
	PushBytesRate  float64
	PushBytesBurst int
	// AcceptRate admits at most this many new connections (WebSocket
	// upgrades and LongPoll sessions) per second, in bursts of up to
	// AcceptBurst (at least 1); over: 503 + Retry-After: 1 (0: off).
	// Only connections whose credentials verified spend it.
	AcceptRate  float64
	AcceptBurst int
	// AuthFailureRate is how many refused credentials one source may
	// present per second (bursts of AuthFailureBurst); past it, its
	// attempts get 429 without their token being verified (0: off).
	AuthFailureRate  float64
	AuthFailureBurst int
	// Per authenticated user (the token's sub), on this gateway (0:
	// unlimited): connections of both transports (over: 429), LongPoll
	// sessions among them (over: 429), and channels joined across all its
	// connections (over: join error "too many channels joined by user").
	MaxConnectionsPerUser int
	MaxLongPollPerUser    int
	MaxChannelsPerUser    int
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
	// A failed write means the client went away: nothing left to tell it.
	_ = json.NewEncoder(w).Encode(map[string]string{"reason": r.reason})
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

// sameOrigin reports whether origin names the host the request was sent
// to (or is absent). It is the default in anonymous mode: there every
// page is allowed to do everything, so without it any web site a
// developer visits could drive the local server from their browser.
//
// A browser on the server's own machine (the request comes over loopback)
// must also have reached it by a loopback name: otherwise a page at
// evil.example:4000 whose name was made to resolve to 127.0.0.1 (DNS
// rebinding) would be its own "same origin".
func sameOrigin(r *http.Request, origin string) bool {
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	if ip, err := netip.ParseAddr(remoteIP(r)); err == nil && ip.Unmap().IsLoopback() {
		return loopbackName(u.Hostname())
	}
	return true
}

// loopbackName reports whether host names this machine: localhost (and
// *.localhost, which browsers resolve to loopback themselves) or a
// loopback address.
func loopbackName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Unmap().IsLoopback()
}

// originAllowed applies the configured allow-list; with none, any origin
// when tokens are required (a cross-site page cannot borrow a bearer
// token), only the same origin in anonymous mode.
func (g *Gateway) originAllowed(r *http.Request) bool {
	return g.originOK(r, r.Header.Get("Origin"))
}

func (g *Gateway) originOK(r *http.Request, origin string) bool {
	if len(g.cfg.AllowedOrigins) == 0 && g.cfg.Auth.Verifier == nil {
		return sameOrigin(r, origin)
	}
	return originAllowed(g.cfg.AllowedOrigins, origin)
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
// the namespace grants bound to its subject, plus per-join tokens. It also
// holds the connection's claim on the gateway's counters (the ticket an
// anonymous connection would need), so an authenticated connection costs
// one allocation for both.
type policy struct {
	grants   auth.Grants
	sub      string
	verifier *auth.Verifier
	ticket
	user *userBudget // nil until admitted
	// What a revocation names (see Gate): the token's jti as
	// auth.JTIKey (0 when none) and its iat in unix seconds (0 when
	// none; uint32 lasts until 2106), packed so that the policy stays in
	// its 128-byte size class.
	jti      uint64
	iat      uint32
	longPoll bool
}

func (p *policy) CanJoin(topic string) bool {
	return p.grants.CanJoin(topic) && p.refused() == ""
}
func (p *policy) CanPublish(topic string) bool { return p.grants.CanPublish(topic) }

// Sub implements session.UserPolicy: the session asks for its user here.
func (p *policy) Sub() string { return p.sub }

// AcquireChannel implements session.ChannelBudget: one more channel of the
// connection's user, unless the user is at MaxChannelsPerUser.
func (p *policy) AcquireChannel() bool {
	max := p.g.cfg.Limits.MaxChannelsPerUser
	if p.user == nil || max <= 0 {
		return true
	}
	if p.user.channels.Add(1) > int32(max) {
		p.user.channels.Add(-1)
		return false
	}
	return true
}

// ReleaseChannel implements session.ChannelBudget.
func (p *policy) ReleaseChannel() {
	if p.user != nil && p.g.cfg.Limits.MaxChannelsPerUser > 0 {
		p.user.channels.Add(-1)
	}
}

// release gives the connection's admission back (once).
func (p *policy) release() {
	if p.done.Swap(true) {
		return
	}
	p.ticket.releaseCounts()
	if p.user != nil {
		p.g.users.release(p.sub, p.user, p.longPoll)
	}
}

// CanJoinWithToken admits a join the connection's grants do not cover when
// its params carry a per-join token (typ "join") naming exactly this topic
// and, when it names a user, this connection's user.
func (p *policy) CanJoinWithToken(topic, token string) bool {
	if p.refused() != "" {
		return false // the connection's own token is revoked
	}
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
		return nil, nil, &refusal{status: http.StatusUnauthorized, reason: auth.Reason(err)}
	}
	if claims.Subject == "" {
		// Budgets, presence and the user's own grants ("user:{sub}") all
		// hang on the subject: a connection token without one would be
		// nobody's, and presence would fall back to what the client says.
		return nil, nil, &refusal{status: http.StatusUnauthorized, reason: ReasonMissingSub}
	}
	if ref := g.gateRefusal(claims); ref != nil {
		return nil, nil, ref
	}
	p := &policy{
		grants:   claims.Grants().Merge(a.Grants.For(claims.Subject)),
		sub:      claims.Subject,
		verifier: a.Verifier,
		jti:      auth.JTIKey(claims.ID),
	}
	if iat := claims.IssuedAt.Unix(); !claims.IssuedAt.IsZero() && iat > 0 && iat <= math.MaxUint32 {
		p.iat = uint32(iat)
	}
	return p, claims, nil
}

// ReasonMissingSub refuses a connection token without a sub claim (401).
const ReasonMissingSub = "missing_sub"

// admit runs every pre-upgrade check. On success release must be called
// when the connection ends (or the upgrade fails).
//
// The order keeps work done for an unauthenticated request cheap and
// charged to its source: the origin and the pending-handshake cap first;
// then a source that keeps presenting bad credentials is refused without
// verifying anything; then the token is verified. Only a verified client
// spends the gateway-wide accept budget and the per-address, per-user
// counts, so a flood of bad tokens (which can come at line rate, LongPoll
// opens even on one keep-alive connection) never makes valid clients wait.
func (g *Gateway) admit(r *http.Request, longPoll bool) (pol *policy, claims *auth.Claims, release func(), ref *refusal) {
	if !g.originAllowed(r) {
		g.refused.origin.Add(1)
		g.logOrigin.log(g.cfg.Logger, "connection refused: origin not allowed", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
		return nil, nil, nil, &refusal{status: http.StatusForbidden, reason: "origin_not_allowed"}
	}
	lim := &g.cfg.Limits
	if lim.MaxPendingHandshakes > 0 && g.pending.Add(1) > int64(lim.MaxPendingHandshakes) {
		g.pending.Add(-1)
		g.refused.overload.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 1}
	} else if lim.MaxPendingHandshakes <= 0 {
		g.pending.Add(1)
	}
	defer g.pending.Add(-1)
	src := sourceKey(r)
	now := time.Now()
	if g.cfg.Auth.Verifier != nil && g.authFails.blocked(src, lim.AuthFailureRate, lim.AuthFailureBurst, now) {
		g.refused.authRate.Add(1)
		g.logAuth.log(g.cfg.Logger, "connection refused: too many bad credentials from this source", "remote", r.RemoteAddr)
		return nil, nil, nil, &refusal{status: http.StatusTooManyRequests, reason: "too_many_auth_failures", retryAfter: 1}
	}
	pol, claims, ref = g.authenticate(r)
	if ref != nil {
		g.authFails.fail(src, lim.AuthFailureRate, lim.AuthFailureBurst, now)
		g.refused.auth.Add(1)
		g.logAuth.log(g.cfg.Logger, "connection refused", "remote", r.RemoteAddr, "reason", ref.reason)
		return nil, nil, nil, ref
	}
	if !g.accept.allow(lim.AcceptRate, lim.AcceptBurst, now) {
		g.refused.acceptRate.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 1}
	}
	if lim.MaxConnections > 0 && g.open.Load() >= int64(lim.MaxConnections) {
		g.refused.overload.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusServiceUnavailable, reason: "overloaded", retryAfter: 5}
	}
	if !g.perIP.acquire(src, lim.MaxConnectionsPerIP) {
		g.refused.perIP.Add(1)
		return nil, nil, nil, &refusal{status: http.StatusTooManyRequests, reason: "too_many_connections", retryAfter: 5}
	}
	ip := ""
	if lim.MaxConnectionsPerIP > 0 {
		ip = src
	}
	if pol != nil {
		user, why := g.users.acquire(pol.sub, longPoll, lim)
		if why != "" {
			g.perIP.release(ip, lim.MaxConnectionsPerIP)
			g.refused.user.Add(1)
			g.logUser.log(g.cfg.Logger, "connection refused: user over its budget", "remote", r.RemoteAddr, "reason", why)
			return nil, nil, nil, &refusal{status: http.StatusTooManyRequests, reason: why, retryAfter: 5}
		}
		g.open.Add(1)
		pol.ticket = ticket{g: g, ip: ip}
		pol.user, pol.longPoll = user, longPoll
		return pol, claims, pol.release, nil
	}
	g.open.Add(1)
	if ip == "" {
		// Nothing per connection to remember: one shared func, where a
		// ticket would cost every connection 48 bytes for its lifetime.
		// Each admitted connection calls release exactly once (its
		// session's close, or the failed upgrade).
		return nil, claims, g.releaseOpen, nil
	}
	t := &ticket{g: g, ip: ip}
	return nil, claims, t.release, nil
}

// ticket is an admitted connection's claim on the gateway's counters; it
// is held for the connection's lifetime, so it is kept small.
type ticket struct {
	g    *Gateway
	ip   string // "" when no per-address count is kept
	done atomic.Bool
}

func (t *ticket) release() {
	if t.done.Swap(true) {
		return
	}
	t.releaseCounts()
}

func (t *ticket) releaseCounts() {
	t.g.open.Add(-1)
	if t.ip != "" {
		t.g.perIP.release(t.ip, t.g.cfg.Limits.MaxConnectionsPerIP)
	}
}

// refusals counts connections refused before the upgrade, by cause.
type refusals struct {
	origin, overload, perIP, auth, authRate, acceptRate, user atomic.Uint64
}

// snapshot is Stats.Refused.
func (r *refusals) snapshot() map[string]uint64 {
	return map[string]uint64{
		"origin": r.origin.Load(), "overload": r.overload.Load(),
		"per_ip": r.perIP.Load(), "auth": r.auth.Load(), "accept_rate": r.acceptRate.Load(),
		"auth_rate": r.authRate.Load(), "per_user": r.user.Load(),
	}
}

// acceptBucket is the gateway-wide token bucket of new connections: it
// holds up to burst tokens and refills at rate per second; every admission
// whose credentials verified takes one. A connect storm (a gateway
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
