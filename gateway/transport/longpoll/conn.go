package longpoll

import (
	"sync"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// lpSession is one LongPoll session and its transport.Conn.
//
// Everything below mu is guarded by it. The session never blocks under mu:
// Session callbacks (HandleMessage, HandleClose) run without it.
type lpSession struct {
	srv    *Server
	id     string
	token  string
	remote string

	// dispatch serializes POST bodies: HandleMessage is never called from two
	// requests at once, even if a client sends concurrent POSTs.
	dispatch sync.Mutex

	mu          sync.Mutex
	sess        transport.Session // nil until newSession returned
	buf         [][]byte          // frames waiting for a GET (shared Message.Data, not copied)
	bufBytes    int
	counted     int           // bytes of buf the output budget holds: all while live, none once ended
	drain       chan struct{} // Drained's waiters: closed when a poll takes the buffer or the session ends
	waiter      *waiter       // the GET currently held, if any
	ended       bool          // no more Send, POST or new poll of fresh data
	code        transport.CloseCode
	dispatching bool      // a POST is inside HandleMessage calls
	delivered   bool      // HandleClose has been (or is being) called
	polled      bool      // a GET came since the session opened
	listed      bool      // still in srv.sessions (live, or ended but draining)
	idleAt      time.Time // when the session becomes idle-expired, if no GET is held
	timer       *time.Timer
	expiry      *time.Timer // ExpireAt's, if any
}

// waiter is one held GET. wake is closed (once, under the session's mu) when
// the GET must answer: frames arrived, the session ended, or a newer GET
// replaced it (replaced is then true).
type waiter struct {
	wake     chan struct{}
	replaced bool
	woken    bool
}

func (w *waiter) fire() {
	if !w.woken {
		w.woken = true
		close(w.wake)
	}
}

// Send implements transport.Conn. The frame is buffered (by reference: a
// Message is immutable) and the held GET, if any, is woken.
func (c *lpSession) Send(m *transport.Message) bool {
	if m.Binary {
		// Never emitted on LongPoll (the client JSON.parses every poll
		// message). The gateway must not produce them for LongPoll
		// sessions; count the ones that slip through.
		c.srv.droppedBinary.Add(1)
		return true
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return false
	}
	limit := c.srv.cfg.MaxBuffered
	if !c.polled {
		limit = c.srv.cfg.MaxBufferedUnpolled
	}
	if c.bufBytes+m.Len() > limit {
		c.mu.Unlock()
		c.srv.overflows.Add(1)
		c.end(transport.CloseSlowConsumer, false)
		return false
	}
	// A poll answers each message as one JSON string, so a message with
	// a shared Tail is joined here (a copy, counted against MaxBuffered).
	c.buf = append(c.buf, m.Bytes())
	c.bufBytes += m.Len()
	c.counted += m.Len()
	budget := c.srv.cfg.Budget
	budget.Add(m.Len())
	if c.waiter != nil {
		c.waiter.fire()
	}
	c.mu.Unlock()
	if budget.Over() {
		// The slowest sessions (this one, maybe) are cut; their end
		// takes their locks, so not under ours.
		budget.Reclaim()
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.ended
	}
	return true
}

// dropBufLocked forgets the buffered frames (a poll took them, or the
// session drops them) and takes them off the output budget (c.mu held).
// Every path that empties the buffer goes through it, so the budget's
// count returns to zero when the sessions go.
func (c *lpSession) dropBufLocked() {
	c.uncountLocked()
	c.buf, c.bufBytes = nil, 0
}

// uncountLocked takes the buffer off the output budget (c.mu held): when
// it goes, or when the session ends and keeps it for one last GET. An
// ended session cannot be cut again, and what it keeps (within
// MaxBuffered) goes at its next GET or within IdleTimeout: counting it
// would make the budget cut live sessions for it.
func (c *lpSession) uncountLocked() {
	if c.counted != 0 {
		c.srv.cfg.Budget.Add(-c.counted)
		c.counted = 0
	}
}

// CutSlow implements transport.Victim: the output budget's cut ends the
// session as a slow consumer, dropping what it buffered.
func (c *lpSession) CutSlow() bool {
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		return false
	}
	c.end(transport.CloseSlowConsumer, false)
	return true
}

// pool is the server's sessions as the output budget sees them.
type pool struct{ s *Server }

// Each implements transport.Pool. Sessions' locks are only tried: a
// busy one is skipped this time. f is called with no session's lock held.
func (p pool) Each(f func(transport.Victim, int)) {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	for _, c := range p.s.sessions {
		if !c.mu.TryLock() {
			continue
		}
		n := c.counted
		c.mu.Unlock()
		if n > 0 {
			f(c, n)
		}
	}
}

// Close implements transport.Conn: the session ends. A held GET answers what
// is buffered (or 410 when nothing is); if no GET is held, frames already
// buffered are kept for the next GET, which then gets them with status 200,
// and any GET after that gets 410.
func (c *lpSession) Close(code transport.CloseCode, reason string) {
	c.end(code, true)
}

// RemoteAddr implements transport.Conn: the address of the session-opening GET.
func (c *lpSession) RemoteAddr() string { return c.remote }

// ExpireAt implements transport.Expirer: the session is closed with code
// and reason at t (a credential's expiry). A later call replaces the earlier
// one; a zero t cancels it. One runtime timer, no goroutine until it fires.
func (c *lpSession) ExpireAt(t time.Time, code transport.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	if c.ended || t.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(max(time.Until(t), 0), func() { c.Close(code, reason) })
}

// Backlog implements transport.Conn: bytes buffered and not yet taken by a GET.
func (c *lpSession) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bufBytes
}

// end ends the session once; later calls do nothing. drain keeps buffered
// frames for the held GET or, when none is held, for the next one. HandleClose is delivered
// on its own goroutine (end may be called from inside the hub or the Phoenix
// session, which must not be re-entered), unless a POST is dispatching: the
// dispatcher then delivers it after its last HandleMessage.
func (c *lpSession) end(code transport.CloseCode, drain bool) {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	c.code = code
	if c.waiter != nil {
		c.waiter.fire()
	}
	// Frames still buffered go to the held GET, or to the next one.
	keep := drain && len(c.buf) > 0 && !c.srv.closing.Load()
	if !keep {
		c.dropBufLocked()
	}
	c.uncountLocked()
	c.drainedLocked() // ended: nothing more will be sent
	deliver := c.takeCloseLocked()
	unlist := !keep && c.listed
	if unlist {
		c.listed = false
	}
	if keep && c.timer != nil && c.waiter == nil {
		// The draining session lives at most one idle period more.
		c.idleAt = time.Now().Add(c.srv.cfg.IdleTimeout)
		c.timer.Reset(c.srv.cfg.IdleTimeout)
	} else if !keep && c.timer != nil {
		c.timer.Stop()
	}
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	c.mu.Unlock()

	c.srv.live.Add(-1)
	c.srv.countClose(code)
	c.srv.cfg.Logger.Debug("longpoll session ended", "session", c.id, "remote", c.remote, "code", int(code))
	if unlist {
		c.srv.unlist(c)
	}
	if deliver != nil {
		c.srv.closers.Add(1)
		go func() {
			defer c.srv.closers.Done()
			deliver.HandleClose(code)
		}()
	}
}

// takeCloseLocked returns the Session to call HandleClose on when that call
// is due now (ended, not yet delivered, no POST dispatching, session built),
// marking it delivered.
func (c *lpSession) takeCloseLocked() transport.Session {
	if !c.ended || c.delivered || c.dispatching || c.sess == nil {
		return nil
	}
	c.delivered = true
	return c.sess
}

// idleFired runs on the session's time.AfterFunc timer goroutine.
func (c *lpSession) idleFired() {
	c.mu.Lock()
	if c.waiter != nil {
		c.mu.Unlock()
		return // a GET is held: not idle; the GET re-arms the timer when it ends
	}
	if d := time.Until(c.idleAt); d > 0 {
		c.timer.Reset(d) // a GET came and went after the timer was armed
		c.mu.Unlock()
		return
	}
	if c.ended {
		// A draining session nobody polled (or already unlisted): forget it.
		c.dropBufLocked()
		unlist := c.listed
		c.listed = false
		c.mu.Unlock()
		if unlist {
			c.srv.unlist(c)
		}
		return
	}
	c.mu.Unlock()
	c.srv.idleExpired.Add(1)
	c.end(transport.CloseHeartbeatTimeout, false)
}

// takeLocked removes and returns the buffered frames.
func (c *lpSession) takeLocked() [][]byte {
	b := c.buf
	c.dropBufLocked()
	c.drainedLocked()
	return b
}

// Drained implements transport.Conn. A poll takes the whole buffer, so
// the waiters wake at the next poll (or when the session ends), whatever
// limit each asked for.
func (c *lpSession) Drained(limit int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bufBytes <= limit || c.ended {
		return transport.Now()
	}
	if c.drain == nil {
		c.drain = make(chan struct{})
	}
	return c.drain
}

// drainedLocked wakes Drained's waiters (c.mu held).
func (c *lpSession) drainedLocked() {
	if c.drain != nil {
		close(c.drain)
		c.drain = nil
	}
}

// pollDoneLocked re-arms the idle clock when the held GET w stops being held.
func (c *lpSession) pollDoneLocked(w *waiter) {
	if c.waiter != w {
		return // replaced: the newer GET owns the clock
	}
	c.waiter = nil
	c.idleAt = time.Now().Add(c.srv.cfg.IdleTimeout)
	if c.timer != nil {
		c.timer.Reset(c.srv.cfg.IdleTimeout)
	}
}
