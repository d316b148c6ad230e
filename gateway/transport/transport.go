// Package transport is the contract between the byte-level transports
// (WebSocket on epoll, LongPoll) and the per-connection session above them.
// A transport knows bytes and frames, never Phoenix; a session knows Phoenix,
// never file descriptors. It imports only the standard library.
package transport

import (
	"sync/atomic"
	"time"
)

// CloseCode is a WebSocket close status code (RFC 6455 §7.4, IANA registry,
// and Fabric's application range 4000–4999). LongPoll maps it to a session end.
type CloseCode uint16

// Close codes used by Fabric. The application codes are hints: phoenix.js
// reconnects after every server close, so none of them is terminal.
const (
	CloseNormal           CloseCode = 1000
	CloseGoingAway        CloseCode = 1001 // server shutting down or restarting
	CloseProtocolError    CloseCode = 1002
	CloseUnsupportedData  CloseCode = 1003 // e.g. a binary frame to a v1 JSON client
	CloseNoStatus         CloseCode = 1005 // never sent; reported when the peer gave no code
	CloseAbnormal         CloseCode = 1006 // never sent; reported when the TCP connection just died
	CloseInvalidPayload   CloseCode = 1007 // invalid UTF-8, undecodable frame
	ClosePolicyViolation  CloseCode = 1008
	CloseMessageTooBig    CloseCode = 1009
	CloseInternalError    CloseCode = 1011
	CloseServiceRestart   CloseCode = 1012
	CloseTryAgainLater    CloseCode = 1013
	CloseHeartbeatTimeout CloseCode = 4000 // nothing received within the idle timeout
	CloseTokenExpired     CloseCode = 4001
	CloseForbidden        CloseCode = 4003
	CloseSlowConsumer     CloseCode = 4008 // outbound queue over its bound or stuck
	CloseRateLimited      CloseCode = 4029
)

// Message is one outbound message. It is immutable once built and may be
// shared by every connection it is sent to: a broadcast is encoded once per
// protocol variant and the same *Message goes to all members.
type Message struct {
	// Binary selects a binary frame (WebSocket) instead of a text frame.
	Binary bool
	// Data is the complete application message (one Phoenix frame), or
	// its first part when Tail is set.
	Data []byte
	// Tail, when set, is the rest of the message: a large part that many
	// messages share by reference. A presence_state to a wave of joiners
	// differs only in the join_ref at its front, so each joiner's message
	// is a few dozen bytes of Data and one Tail holds the state for all of
	// them: the state exists once however many joiners queue it. Only
	// Tail.Data is used; transports frame it once for every message that
	// shares it (WebSocket: a continuation frame).
	Tail *Message
	// Compression is the class whose policy and counters apply when the
	// message is compressed (its namespace's); nil: the server's default.
	Compression *Compression

	wire     atomic.Pointer[[]byte]
	deflated atomic.Pointer[[]byte] // see WireDeflated
}

// Len is the message's size: Data plus the Tail's Data.
func (m *Message) Len() int {
	if m.Tail == nil {
		return len(m.Data)
	}
	return len(m.Data) + len(m.Tail.Data)
}

// Bytes returns the whole message: Data itself, or a copy of Data and the
// Tail's Data together (for transports that keep one buffer per message,
// and tests).
func (m *Message) Bytes() []byte {
	if m.Tail == nil {
		return m.Data
	}
	return append(append(make([]byte, 0, m.Len()), m.Data...), m.Tail.Data...)
}

// NewText returns a text message holding b (not copied).
func NewText(b []byte) *Message { return &Message{Data: b} }

// NewBinary returns a binary message holding b (not copied).
func NewBinary(b []byte) *Message { return &Message{Binary: true, Data: b} }

// Wire returns the transport's encoding of m (for WebSocket: header plus
// payload), computing it with build on first use and caching it, so that a
// broadcast to N connections is framed once. Concurrent callers may both
// call build; one result wins and both are identical.
func (m *Message) Wire(build func(*Message) []byte) []byte {
	return cached(&m.wire, m, build)
}

// WireDeflated is Wire for the transport's compressed encoding
// (permessage-deflate without context takeover, identical for every
// recipient): built once, cached next to the plain one. A nil result
// (cached too) means "send it plain".
func (m *Message) WireDeflated(build func(*Message) []byte) []byte {
	return cached(&m.deflated, m, build)
}

func cached(slot *atomic.Pointer[[]byte], m *Message, build func(*Message) []byte) []byte {
	if p := slot.Load(); p != nil {
		return *p
	}
	b := build(m)
	if slot.CompareAndSwap(nil, &b) {
		return b
	}
	return *slot.Load()
}

// Conn is the session's handle on one client connection. All methods are
// safe for concurrent use and never block on the network.
//
// The connection's queue is its one writer: frames reach the client in
// the order their Send calls took the connection's lock, and nothing
// reaches the socket any other way. Who calls Send for which frames, and
// under which lock, is docs/architecture.md's "Who writes to a
// connection".
type Conn interface {
	// Send queues m for delivery. It returns false when the connection is
	// closing or closed (the message is then dropped). When the connection's
	// outbound queue exceeds its bound, the transport closes it with
	// CloseSlowConsumer and Send returns false. When the send takes the
	// process over its OutputBudget, the connections holding the most
	// are closed the same way (this one, if it is among them: Send then
	// returns false).
	Send(m *Message) bool
	// Close starts an orderly close with code and reason. Queued messages
	// that are already being written are finished; the rest are dropped.
	// Idempotent; the first code wins.
	Close(code CloseCode, reason string)
	// RemoteAddr is the peer address, for logs.
	RemoteAddr() string
	// Backlog is the number of bytes queued and not yet taken by the
	// socket (LongPoll: by a poll).
	Backlog() int
	// Drained returns a channel that is closed once at most limit bytes
	// are queued, or the connection is closed. The transport's writer
	// closes it as the queue shrinks (the WebSocket loop after a write,
	// a LongPoll poll taking the buffer), so bulk senders (replay) wait
	// on it between steps, rather than polling Backlog or tripping the
	// slow-consumer bound. When that holds already the answer is a
	// closed channel (Now). Waiting costs the connection nothing while
	// no one waits.
	Drained(limit int) <-chan struct{}
}

var closedChan = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Now is a closed channel: Drained's answer when the queue is short
// enough already.
func Now() <-chan struct{} { return closedChan }

// QueuedCloser is implemented by transports whose Close drops queued
// messages (WebSocket) to offer a close that sends them first. A rate-limit
// close uses it: the client is answered for everything it was told
// happened (a join reply already queued) before the connection ends.
// LongPoll's Close already keeps buffered frames for the next poll.
type QueuedCloser interface {
	// CloseAfterQueued is Close, except that messages already queued
	// are sent before the close frame (still bounded by the close
	// timeout).
	CloseAfterQueued(code CloseCode, reason string)
}

// Session receives what a transport reads from one connection.
//
// The transport calls HandleMessage from one goroutine at a time per
// connection, in arrival order; data is valid only during the call (it lives
// in a shared read buffer). HandleClose is called exactly once, after the
// last HandleMessage, when the connection is gone.
type Session interface {
	HandleMessage(binary bool, data []byte)
	HandleClose(code CloseCode)
}

// Expirer is implemented by transports that can close a connection at a
// fixed time (a credential's expiry) without a timer per connection.
type Expirer interface {
	// ExpireAt closes the connection with code and reason at t. Every
	// call with the same code gives the same reason: a transport may keep
	// it per code rather than per connection.
	ExpireAt(t time.Time, code CloseCode, reason string)
}
