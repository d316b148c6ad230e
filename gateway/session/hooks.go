package session

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
)

// Join hooks: a namespace configured `joins: request` has each join
// admitted by a service (Phoenix's join/3 over NATS, gateway/hooks). The
// join instance is registered first, like any other, so a leave, a
// duplicate join or a disconnect while the service thinks cancels it;
// the service's answer then either refuses it or attaches it to the hub.

// connHook is what a connection brings to the hooks: its token's claims
// and the connect hook's assigns (raw JSON objects, nil when none).
type connHook struct {
	claims, assigns []byte
}

// chanHook is a join hook's ok answer, kept with the channel instance.
type chanHook struct {
	response []byte // merged into the join reply's response
	assigns  []byte // the channel's assigns merged over the connection's
}

// SetHookContext gives the connection's token claims and its connect-hook
// assigns to the hooks (join requests, push requests, lifecycle events).
// Call it before SetIdentity, and only when hooks are in use: it costs the
// connection the claims' bytes.
func (s *Session) SetHookContext(claims, assigns []byte) {
	if len(claims) == 0 && len(assigns) == 0 {
		return
	}
	s.hook = &connHook{claims: claims, assigns: compact(assigns)}
}

// connAssigns is the connection's assigns, nil when none.
func (s *Session) connAssigns() []byte {
	if s.hook == nil {
		return nil
	}
	return s.hook.assigns
}

// assigns is what a push request or lifecycle event of ch carries.
func (ch *channel) assigns() []byte {
	if h := ch.hookAnswer(); h != nil {
		return h.assigns
	}
	return ch.s.connAssigns()
}

// hookResponse is the join reply's response: the service's, with
// Fabric's own keys (epoch, offset, recovered) added after it so that they
// win for any JSON reader.
func (ch *channel) hookResponse(fabric []byte) []byte {
	h := ch.hookAnswer()
	if h == nil || len(h.response) == 0 {
		return fabric
	}
	return mergeObjects(h.response, fabric)
}

// joinHooked reports whether topic's joins are asked, and whether joins
// the token does not cover are asked too.
func (s *Session) joinHooked(topic string) (hooked, all bool) {
	if s.cfg.Hooks == nil {
		return false, false
	}
	scope, _, ok := s.cfg.Hooks.JoinHook(topic)
	return ok, ok && scope == namespace.ScopeAll
}

// askJoinHook asks the service about ch's join (arrived at `at`) and, on
// ok, attaches it like any other join. A refusal carries the service's
// reason to the client.
func (s *Session) askJoinHook(ch *channel, member hub.Member, granted bool, at time.Time) {
	m := broker.JoinMeta{Subject: s.Sub(), ConnID: s.ID(), Params: ch.paramsJSON(), Granted: granted, Resume: member.Resume}
	if s.hook != nil {
		m.Claims, m.Assigns = s.hook.claims, s.hook.assigns
	}
	s.cfg.Hooks.Join(at, ch.topic, m, func(a broker.HookAnswer, why string) {
		s.mu.Lock()
		if s.closed || s.channel(ch.topic) != ch {
			// Left, replaced or disconnected meanwhile: nothing to answer.
			s.mu.Unlock()
			s.joinDone(ch, JoinCanceled)
			return
		}
		if why != "" {
			s.forget(ch)
			ch.setGone()
			s.mu.Unlock()
			s.joinDone(ch, JoinHookRefused)
			s.reply(ch.joinRef(), ch.joinMsgRef(), ch.topic, false, reasonJSON(why))
			return
		}
		if len(a.Response) > 0 || len(a.Assigns) > 0 {
			h := &chanHook{response: compact(a.Response), assigns: compact(s.connAssigns())}
			if len(a.Assigns) > 0 {
				h.assigns = mergeObjects(h.assigns, a.Assigns)
			}
			ch.more.hook = h // more exists: newChannel was told the join is hooked
		}
		s.attach(ch, member) // unlocks s.mu
	})
}

// reasonJSON is {"reason": why} for any string (the services' reasons are
// not constants).
func reasonJSON(why string) []byte {
	b, _ := json.Marshal(struct {
		Reason string `json:"reason"`
	}{why})
	return b
}

// mergeObjects returns the JSON object with every key of base and over,
// over's value where both have one. Both are JSON objects or empty.
func mergeObjects(base, over []byte) []byte {
	if len(bytes.TrimSpace(base)) == 0 {
		return compact(over)
	}
	if len(bytes.TrimSpace(over)) == 0 {
		return compact(base)
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(base, &m) != nil {
		m = map[string]json.RawMessage{}
	}
	var o map[string]json.RawMessage
	if json.Unmarshal(over, &o) == nil {
		for k, v := range o {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return compact(over)
	}
	return b
}

// compact removes insignificant space, so that assigns fit a NATS header
// (no line breaks) and cost no more than they must.
func compact(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	var out bytes.Buffer
	if json.Compact(&out, b) != nil {
		return nil
	}
	return out.Bytes()
}
