// Package transporttest provides a fake transport.Conn for session and hub
// tests. Stdlib only.
package transporttest

import (
	"sync"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// Conn is a fake transport.Conn that records what is sent to it. It is safe
// for concurrent use. The zero value is an open connection.
type Conn struct {
	mu     sync.Mutex
	sent   []*transport.Message
	closed bool
	code   transport.CloseCode
	reason string
	refuse bool // Send returns false without closing
	notify chan struct{}
	// backlog is what SetBacklog pretends is queued; drain is Drained's
	// channel, closed once backlog <= drainAt or the conn closes.
	backlog int
	drain   chan struct{}
	drainAt int
}

var _ transport.Conn = (*Conn)(nil)

// NewConn returns an open Conn.
func NewConn() *Conn { return &Conn{} }

// Send implements transport.Conn: it records m (the pointer itself) and
// returns true, or returns false once the conn is closed or refusing.
func (c *Conn) Send(m *transport.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.refuse {
		return false
	}
	c.sent = append(c.sent, m)
	c.signal()
	return true
}

// Close implements transport.Conn. The first code wins.
func (c *Conn) Close(code transport.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed, c.code, c.reason = true, code, reason
	c.signal()
	c.drained()
}

// RemoteAddr implements transport.Conn.
func (c *Conn) RemoteAddr() string { return "fake" }

// Backlog implements transport.Conn: what SetBacklog set (0: a fake conn
// never queues by itself).
func (c *Conn) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.backlog
}

// Drained implements transport.Conn like a real transport: the channel
// closes once SetBacklog lowers the backlog to limit or the conn closes.
func (c *Conn) Drained(limit int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backlog <= limit || c.closed {
		return transport.Now()
	}
	if c.drain == nil {
		c.drain, c.drainAt = make(chan struct{}), limit
	} else {
		c.drainAt = min(c.drainAt, limit)
	}
	return c.drain
}

// SetBacklog pretends n bytes are queued, as a socket that stopped
// reading would leave them: a bulk sender (replay) waiting on Drained
// waits until the backlog is lowered again.
func (c *Conn) SetBacklog(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.backlog = n
	if c.drain != nil && n <= c.drainAt {
		c.drained()
	}
}

// drained wakes Drained's waiters (c.mu held).
func (c *Conn) drained() {
	if c.drain != nil {
		close(c.drain)
		c.drain = nil
	}
}

// SetRefuse makes Send return false (as for a closing connection) without
// recording a close code.
func (c *Conn) SetRefuse(refuse bool) {
	c.mu.Lock()
	c.refuse = refuse
	c.mu.Unlock()
}

// Sent returns a copy of the messages sent so far, in order.
func (c *Conn) Sent() []*transport.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*transport.Message(nil), c.sent...)
}

// Len returns the number of messages sent so far.
func (c *Conn) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

// Reset forgets the messages sent so far.
func (c *Conn) Reset() {
	c.mu.Lock()
	c.sent = nil
	c.mu.Unlock()
}

// Closed reports whether Close was called, with the first code and reason.
func (c *Conn) Closed() (closed bool, code transport.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.code, c.reason
}

// WaitLen waits until at least n messages were sent or d passed, and
// returns the messages sent so far.
func (c *Conn) WaitLen(n int, d time.Duration) []*transport.Message {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		if len(c.sent) >= n {
			out := append([]*transport.Message(nil), c.sent...)
			c.mu.Unlock()
			return out
		}
		if c.notify == nil {
			c.notify = make(chan struct{})
		}
		ch := c.notify
		c.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return c.Sent()
		}
		t := time.NewTimer(left)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// WaitClosed waits until Close was called or d passed and reports whether
// it was, with the code.
func (c *Conn) WaitClosed(d time.Duration) (bool, transport.CloseCode) {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		if c.closed {
			code := c.code
			c.mu.Unlock()
			return true, code
		}
		if c.notify == nil {
			c.notify = make(chan struct{})
		}
		ch := c.notify
		c.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return false, 0
		}
		t := time.NewTimer(left)
		select {
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// signal wakes waiters; called with mu held.
func (c *Conn) signal() {
	if c.notify != nil {
		close(c.notify)
		c.notify = nil
	}
}
