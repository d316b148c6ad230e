package broker

import (
	"context"
	"errors"
	"time"
)

// ErrInvalidHookReply is returned by the Hooks requests when the service
// answered something that is not a valid reply (fail closed: refused).
var ErrInvalidHookReply = errors.New("broker: invalid hook reply")

// JoinMeta is what a join hook is told about a join (schema JoinRequest).
// The JSON fields are raw JSON objects, nil when absent.
type JoinMeta struct {
	Subject string
	ConnID  string
	Params  []byte // join params
	Claims  []byte // the connection token's claims
	Assigns []byte // the connection's assigns (connect hook)
	Granted bool   // the token or a per-join token covers the topic
	Resume  *Position
}

// ConnectMeta is what the connect hook is told (schema ConnectRequest).
type ConnectMeta struct {
	Subject   string
	Claims    []byte // raw JSON object, nil when anonymous
	Params    []byte // raw JSON object of strings
	Transport string
}

// HookAnswer is a service's answer to a connect or join hook.
type HookAnswer struct {
	OK     bool
	Reason string // when !OK
	// Response (join) and Assigns are JSON objects, nil when absent.
	Response []byte
	Assigns  []byte
	// CacheTTL (join): how long the ok answer may be reused.
	CacheTTL time.Duration
	// Channels and Publish (connect): extra grant patterns.
	Channels, Publish []string
}

// Hooks is implemented by brokers that can ask backend services whether a
// connection or a join may proceed (Phoenix's connect/3 and join/3 in any
// language). Errors: ErrNoHandler when no service listens,
// context.DeadlineExceeded when none answered in time, ErrUnavailable (wrapped)
// when the bus is known to be away.
//
// Which namespaces ask about their joins, and how long an answer may take,
// is namespace policy (gateway/namespace); the caller bounds ctx.
type Hooks interface {
	RequestJoin(ctx context.Context, topic string, m JoinMeta) (HookAnswer, error)
	RequestConnect(ctx context.Context, m ConnectMeta) (HookAnswer, error)
}
