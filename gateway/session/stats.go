package session

import (
	"sync/atomic"
)

// Stats: join results and push refusals, counted per gateway.

// PushRefusals lists the reasons a push is answered with an error, in a
// fixed order (Stats.PushesRefused; the reason label of
// fabric_pushes_refused_total).
var PushRefusals = [...]string{ReasonUnmatchedTopic, ReasonRateLimited, ReasonUnauthorized, ReasonReservedEvent,
	ReasonInvalidEvent, ReasonTooLarge, ReasonPublishFailed, ReasonNoHandler, ReasonTimeout, ReasonUnavailable,
	ReasonInvalidReply}

// Join results, counted per gateway in Stats.Joins (and exported as the
// result label of fabric_joins_total). Every phx_join a session receives
// is counted exactly once, under the first of these that applies.
const (
	// JoinInvalid: malformed join params or resume position, or an
	// invalid topic (replied bad_request or invalid_topic).
	JoinInvalid = "invalid"
	// JoinRateLimited: over the join rate (replied rate_limited).
	JoinRateLimited = "rate_limited"
	// JoinUnauthorized: outside the connection's grants, with no valid
	// per-join token (replied unauthorized).
	JoinUnauthorized = "unauthorized"
	// JoinTooManyChannels: over MaxChannels (replied "too many channels
	// joined").
	JoinTooManyChannels = "too_many_channels"
	// JoinUserBudget: over the user's channel budget across its
	// connections (replied "too many channels joined by user").
	JoinUserBudget = "user_budget"
	// JoinCanceled: the client left, joined the topic again or
	// disconnected before the join was answered; nothing was replied.
	JoinCanceled = "canceled"
	// JoinError: the hub could not attach the member (broker subscription
	// or the first replay fetch failed, or JoinTimeout); replied
	// unavailable.
	JoinError = "error"
	// JoinOK: replied ok (a resume too, whatever its outcome).
	JoinOK = "ok"
	// JoinHookRefused: the namespace's join hook refused it, or could
	// not answer (no_handler, timeout...); replied with that reason.
	JoinHookRefused = "hook_refused"
)

// JoinResults lists every join result, in a fixed order.
var JoinResults = [...]string{JoinOK, JoinInvalid, JoinUnauthorized, JoinRateLimited, JoinTooManyChannels, JoinUserBudget, JoinError, JoinCanceled, JoinHookRefused}

// Stats is a snapshot of the counters shared by every session of a Config.
type Stats struct {
	// Joins counts join attempts by result (every JoinResults key is
	// present).
	Joins map[string]uint64
	// PushesRefused counts pushes answered with an error, by reason
	// (every PushRefusals key is present).
	PushesRefused map[string]uint64
	// PushesLimited counts pushes answered rate_limited, by the limit
	// they met: "count" (PushRate) or "bytes" (PushBytesRate).
	PushesLimited map[string]uint64
}

// counters are a Config's statistics; atomics because every session of a
// gateway updates them from its own goroutine.
type counters struct {
	joins   [len(JoinResults)]atomic.Uint64
	refused [len(PushRefusals)]atomic.Uint64
	// pushes refused by PushRate, PushBytesRate
	pushCounted, pushBytes atomic.Uint64
	// lastLog is monoNow() of the last refused-push log line, and
	// unlogged the refusals since that were not logged: bad pushes are
	// counted, and logged at a sampled rate (a client can send thousands
	// a second).
	lastLog  atomic.Int64
	unlogged atomic.Uint64
}

func (c *counters) refusedPush(reason string) {
	for i, r := range PushRefusals {
		if r == reason {
			c.refused[i].Add(1)
			return
		}
	}
}

func (c *counters) join(result string) {
	for i, r := range JoinResults {
		if r == result {
			c.joins[i].Add(1)
			return
		}
	}
}

// Stats returns a snapshot of the counters of every session sharing c.
func (c *Config) Stats() Stats {
	st := Stats{Joins: make(map[string]uint64, len(JoinResults)),
		PushesRefused: make(map[string]uint64, len(PushRefusals)),
		PushesLimited: map[string]uint64{"count": c.counters.pushCounted.Load(), "bytes": c.counters.pushBytes.Load()}}
	for i, r := range JoinResults {
		st.Joins[r] = c.counters.joins[i].Load()
	}
	for i, r := range PushRefusals {
		st.PushesRefused[r] = c.counters.refused[i].Load()
	}
	return st
}
