package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Cluster-wide control, this gateway's half: what a backend's Presence,
// Channels, Disconnect, Unsubscribe and Revoke need from one gateway
// (nats/natsctl's responder calls these), and the gate every upgrade and
// join passes (revoked tokens, banned users).

// Gate refuses tokens and users cluster-wide. natsctl.Revocations
// implements it; the gateway asks it at every upgrade, LongPoll request
// and join, so it must answer from memory.
type Gate interface {
	// Refusal is "" when the token (its sub, its jti as auth.JTIKey — 0
	// when none — and iat — zero when none) may be used, else why not:
	// "banned" (until when), "token_revoked", or
	// "revocation_list_unavailable".
	Refusal(sub string, jti uint64, iat time.Time) (reason string, until time.Time)
}

// BanCloser is a Gate that knows how a ban asked to close the banned
// user's connections (the Disconnect's code and reason).
type BanCloser interface {
	BanClose(sub string) (code int, reason string)
}

// Gate refusal reasons (Gate.Refusal), as refusal bodies carry them.
const (
	ReasonBanned      = "banned"
	ReasonRevoked     = "token_revoked"
	ReasonGateUnknown = "revocation_list_unavailable"
)

// Close codes of control operations (docs/cluster-control.md). phoenix.js
// reconnects after any close; these tell an app (phoenix-resume.js's
// guardSocket) why, and the next upgrade is refused while they hold.
const (
	CloseDisconnected transport.CloseCode = 4010 // Disconnect without a code
	CloseBanned       transport.CloseCode = 4011 // Disconnect with a ban, without a code
	CloseRevoked      transport.CloseCode = 4012 // the connection's token was revoked
)

// ID names this gateway in the cluster (presence, control answers);
// stable for the process.
func (g *Gateway) ID() string { return g.id }

// gateRefusal is the HTTP refusal of a token the gate refuses, or nil.
// A ban is 403 with Retry-After (the seconds left), so phoenix.js backs
// off instead of retrying at once; a revoked token is 401 like any
// unusable token; an unread list is 503 (fail closed).
func (g *Gateway) gateRefusal(c *auth.Claims) *refusal {
	gate := g.cfg.Auth.Gate
	if gate == nil {
		return nil
	}
	why, until := gate.Refusal(c.Subject, auth.JTIKey(c.ID), c.IssuedAt)
	switch why {
	case "":
		return nil
	case ReasonBanned:
		secs := int(time.Until(until).Seconds()) + 1
		return &refusal{status: http.StatusForbidden, reason: ReasonBanned, retryAfter: max(1, secs)}
	case ReasonGateUnknown:
		return &refusal{status: http.StatusServiceUnavailable, reason: why, retryAfter: 1}
	default:
		return &refusal{status: http.StatusUnauthorized, reason: why}
	}
}

// refused reports whether the gate now refuses p's token.
func (p *policy) refused() string {
	if p.g == nil || p.g.cfg.Auth.Gate == nil {
		return "" // not admitted yet (tests), or no gate
	}
	gate := p.g.cfg.Auth.Gate
	var iat time.Time
	if p.iat != 0 {
		iat = time.Unix(int64(p.iat), 0)
	}
	why, _ := gate.Refusal(p.sub, p.jti, iat)
	return why
}

// eachSession calls fn for every open connection's session, both
// transports.
func (g *Gateway) eachSession(fn func(*session.Session)) {
	visit := func(ts transport.Session) {
		if s, ok := ts.(*session.Session); ok {
			fn(s)
		}
	}
	g.ws.Each(visit)
	g.lp.Each(visit)
}

// LocalPresence returns topic's members on this gateway: the presence
// tracker's metas for a presence namespace, else one {"conn": id} meta
// per channel instance, keyed by user (by connection id when anonymous).
func (g *Gateway) LocalPresence(topic string) map[string][]json.RawMessage {
	if g.pres != nil {
		if m, ok := g.pres.Local(topic); ok {
			return m
		}
	}
	out := map[string][]json.RawMessage{}
	for _, k := range g.hub.MemberKeys(topic) {
		s := session.KeySession(k)
		if s == nil {
			continue
		}
		id := s.ID()
		key := s.Sub()
		if key == "" {
			key = id
		}
		out[key] = append(out[key], json.RawMessage(`{"conn":`+strconv.Quote(id)+`}`))
	}
	return out
}

// LocalChannels lists the topics with local members matching pattern (a
// grant pattern: "room:*", "game:>"; "" for every topic).
func (g *Gateway) LocalChannels(pattern string) ([]control.ChannelInfo, error) {
	var p auth.Pattern
	if pattern != "" {
		var err error
		if p, err = auth.ParsePattern(pattern); err != nil {
			return nil, err
		}
	}
	var out []control.ChannelInfo
	g.hub.Topics(func(topic string, members int) {
		if pattern == "" || p.Match(topic) {
			out = append(out, control.ChannelInfo{Topic: topic, Members: members})
		}
	})
	return out, nil
}

// DisconnectUser closes every connection of user with code and reason.
// The join hook's cached answers for the user go too: a kicked player's
// reconnect asks the service again (docs/hooks.md).
func (g *Gateway) DisconnectUser(user string, code int, reason string) int {
	if g.hooks != nil {
		g.hooks.Forget(user)
	}
	n := 0
	g.eachSession(func(s *session.Session) {
		if s.Sub() == user {
			s.Close(transport.CloseCode(code), reason)
			n++
		}
	})
	return n
}

// UnsubscribeUser sends phx_close to each of user's instances of topic
// and ends them (and forgets the join hook's cached answers for the user).
func (g *Gateway) UnsubscribeUser(user, topic string) int {
	if g.hooks != nil {
		g.hooks.Forget(user)
	}
	n := 0
	for _, k := range g.hub.MemberKeys(topic) {
		if s := session.KeySession(k); s != nil && s.Sub() == user && s.Unsubscribe(topic) {
			n++
		}
	}
	return n
}

// CloseRefused closes every connection whose token the gate now refuses:
// 4012 for a revoked token, 4011 for a banned user. An unread list
// closes nothing (it refuses new upgrades instead).
func (g *Gateway) CloseRefused() int {
	if g.cfg.Auth.Gate == nil {
		return 0
	}
	n := 0
	g.eachSession(func(s *session.Session) {
		p, ok := s.Policy().(*policy)
		if !ok {
			return
		}
		switch p.refused() {
		case ReasonRevoked:
			s.Close(CloseRevoked, "token revoked")
			n++
		case ReasonBanned:
			code, reason := CloseBanned, "banned"
			if bc, ok := g.cfg.Auth.Gate.(BanCloser); ok {
				if c, r := bc.BanClose(p.sub); c != 0 {
					code, reason = transport.CloseCode(c), r
				}
			}
			s.Close(code, reason)
			n++
		}
	})
	return n
}

// LocalCounts is the number of open connections and of active channels.
func (g *Gateway) LocalCounts() (connections, channels int) {
	return int(g.open.Load()), g.hub.Stats().Channels
}
