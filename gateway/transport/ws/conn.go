package ws

import (
	"errors"
	"net/netip"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
)

const (
	stateOpen uint8 = iota
	stateClosing
	stateClosed
)

// maxIovecs bounds one writev when draining a queue: 128 takes a join
// reply and the replay of a resume that missed 100 messages in one
// syscall (a replay step is up to hub.Config.ReplayPage, 256), and a
// queue of up to 128 frames is pooled, so such a replay does not grow its
// slice anew on every connection (IOV_MAX is 1024).
const maxIovecs = 128

// conn is one upgraded connection. Fields under "mu" are shared with
// senders; the rest belong to the loop goroutine. An idle connection holds
// only this struct (96 bytes): output waiting for the socket and input
// waiting for the rest of a frame live in pooled side structures that
// exist only while bytes are pending.
type conn struct {
	l    *loop
	sess transport.Session

	// timing wheel (loop.mu)
	wprev, wnext *conn

	mu  sync.Mutex
	out *outQueue // frames the socket has not taken yet; nil when none

	in *partial // loop goroutine only: unfinished frame or fragmented message; nil when none

	// deadline (under mu) is, while open, when the connection expires
	// (0 = never: ExpireAt) and, while closing, when the socket is
	// dropped if the peer has not answered the close frame.
	deadline   stamp
	lastRead   stamp  // loop goroutine only
	wdue       stamp  // timing wheel (loop.mu): the slot's time; 0 = off the wheel
	gen        uint32 // loop.mu
	fd         int32  // under mu; -1 once closed; only the loop closes it
	closeCode  transport.CloseCode
	expireCode transport.CloseCode
	state      uint8
	watched    bool
	outArmed   bool
	dirty      bool // on the loop's flush list
	pinged     bool // loop goroutine only
	deflate    bool // permessage-deflate negotiated (set before add)
	paused     bool // loop goroutine only: input waits for its inflate budget
	// failed is set (loop goroutine) once the peer broke the protocol: the
	// rest of its stream is unparseable and is discarded unread, as RFC
	// 6455 §7.1.7 asks, while the close frame goes out.
	failed bool
}

// outQueue holds frames waiting for a writable socket. Frames are shared
// between connections and never modified.
type outQueue struct {
	frames [][]byte
	off    int // bytes of frames[0] already written
	bytes  int // bytes still to write
	// counted is the part of bytes the process's output budget holds:
	// all of them while the socket is stuck (EPOLLOUT armed), else none.
	counted int
	since   int64 // Unix seconds when the queue formed (write timeout)
	// drain, when set, is closed once bytes <= drainAt (or the queue
	// goes): Drained's waiters. It lives here, not in conn, so an idle
	// connection pays nothing for it.
	drain   chan struct{}
	drainAt int
}

// partial holds input that does not yet form a whole message.
type partial struct {
	pend []byte // unfinished frame
	msg  []byte // unfinished fragmented message
	op   byte   // opcode of msg; 0 = none
	rsv1 bool   // msg is compressed
}

var (
	outPool     = sync.Pool{New: func() any { return new(outQueue) }}
	partialPool = sync.Pool{New: func() any { return new(partial) }}
)

// releaseOut returns c's empty queue to the pool (c.mu held).
func (c *conn) releaseOut() {
	if q := c.out; q != nil {
		if q.counted != 0 {
			c.l.s.cfg.Budget.Add(-q.counted)
		}
		if q.drain != nil {
			close(q.drain) // empty (or closed): every waiter may go on
		}
		clear(q.frames)
		*q = outQueue{frames: q.frames[:0]}
		if cap(q.frames) > maxIovecs {
			q.frames = nil // do not pool a queue a slow reader grew
		}
		c.out = nil
		outPool.Put(q)
	}
}

// releaseIn returns c's empty partial state to the pool (loop goroutine).
func (c *conn) releaseIn() {
	if p := c.in; p != nil {
		c.in = nil
		if cap(p.pend) > readBufferSize || cap(p.msg) > readBufferSize {
			return // a large message's buffer is left to the GC
		}
		*p = partial{pend: p.pend[:0], msg: p.msg[:0]}
		partialPool.Put(p)
	}
}

// account brings the output budget's count of c's queue up to date
// (c.mu held): a queue counts while its socket has stopped taking bytes
// and the connection is open. A closing one no longer counts: it cannot be
// cut again, what it keeps (the frame being written, or what
// CloseAfterQueued keeps, within MaxQueueBytes) goes within CloseTimeout,
// and counting it would make the budget cut healthy connections for it.
// Every change of q.bytes, outArmed or state is followed by account or
// by releaseOut, so the count returns to zero when the queue goes.
func (c *conn) account() {
	q := c.out
	if q == nil {
		return
	}
	want := 0
	if c.outArmed && c.state == stateOpen {
		want = q.bytes
	}
	if d := want - q.counted; d != 0 {
		q.counted = want
		c.l.s.cfg.Budget.Add(d)
	}
}

func (c *conn) queued() int {
	if c.out == nil {
		return 0
	}
	return c.out.bytes
}

var (
	_ transport.Conn    = (*conn)(nil)
	_ transport.Expirer = (*conn)(nil)
)

// RemoteAddr implements transport.Conn. It asks the kernel rather than
// keeping a string per connection: it is only wanted for the odd log line.
func (c *conn) RemoteAddr() string {
	c.mu.Lock() // the loop closes the fd only after taking it away under mu
	defer c.mu.Unlock()
	if c.fd < 0 {
		return ""
	}
	sa, err := unix.Getpeername(int(c.fd))
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	}
	return ""
}

// ExpireAt implements transport.Expirer: the wheel closes the connection
// at t (second granularity).
func (c *conn) ExpireAt(t time.Time, code transport.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return // closing anyway; deadline now means the close timeout
	}
	c.l.s.expiry.set(code, reason)
	c.deadline, c.expireCode = toStamp(t.Unix()), code
	c.l.reschedule(c, c.deadline.unix()) // no-op before add, which files it by nextDue
}

// Backlog implements transport.Conn.
func (c *conn) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued()
}

// Drained implements transport.Conn. The loop closes the channel from
// flush (or when the queue is dropped); several waiters (replays of
// several channels) share one channel, closed at the lowest limit asked.
func (c *conn) Drained(limit int) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.out
	if q == nil || q.bytes <= limit || c.state != stateOpen {
		return transport.Now()
	}
	if q.drain == nil {
		q.drain, q.drainAt = make(chan struct{}), limit
	} else {
		q.drainAt = min(q.drainAt, limit)
	}
	return q.drain
}

// drainedLocked wakes Drained's waiters once the queue is short enough
// (c.mu held).
func (c *conn) drainedLocked() {
	if q := c.out; q != nil && q.drain != nil && q.bytes <= q.drainAt {
		close(q.drain)
		q.drain = nil
	}
}

func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != stateOpen
}

// Send implements transport.Conn.
func (c *conn) Send(m *transport.Message) bool {
	var b, tail []byte
	if c.deflate && c.l.s.deflatable(m) {
		b, tail = c.l.s.deflated(m)
	}
	if b == nil {
		b = m.Wire(buildFrame)
		if m.Tail != nil {
			tail = m.Tail.Wire(buildTail)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	// Only a socket that stopped taking bytes (EPOLLOUT armed) makes a
	// slow consumer: frames merely waiting for the loop's next flush are
	// a burst being coalesced, and shared with every other member.
	if c.outArmed && c.out != nil && c.out.bytes+len(b)+len(tail) > c.l.s.cfg.MaxQueueBytes {
		c.closeLocked(transport.CloseSlowConsumer, "slow consumer")
		return false
	}
	// Both fragments under one lock: nothing can come between them (a
	// close frame may, which RFC 6455 allows inside a fragmented message).
	ok := c.writeLocked(b)
	if ok && tail != nil {
		ok = c.writeLocked(tail)
	}
	if !c.l.s.cfg.Budget.Over() {
		return ok
	}
	// Over the process's budget: the slowest connections are cut, which
	// takes their locks, so not under ours. This one may be among them.
	c.mu.Unlock()
	c.l.s.cfg.Budget.Reclaim()
	c.mu.Lock()
	return ok && c.state == stateOpen
}

// Close implements transport.Conn.
func (c *conn) Close(code transport.CloseCode, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

// CutSlow implements transport.Victim: the output budget's cut.
func (c *conn) CutSlow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	c.closeLocked(transport.CloseSlowConsumer, "slow consumer")
	return true
}

// pool is the server's connections as the output budget sees them.
type pool struct{ s *Server }

// Each implements transport.Pool. It holds each loop's lock while it
// looks, so it only tries connections' locks (their holders take the
// loop's lock under them): a busy connection is skipped this time. f is
// called with no connection's lock held.
func (p pool) Each(f func(transport.Victim, int)) {
	for _, l := range p.s.loops {
		l.mu.Lock()
		for _, c := range l.conns {
			if c == nil || !c.mu.TryLock() {
				continue
			}
			n := 0
			if q := c.out; q != nil && c.state == stateOpen {
				n = q.counted
			}
			c.mu.Unlock()
			if n > 0 {
				f(c, n)
			}
		}
		l.mu.Unlock()
	}
}

// CloseAfterQueued implements transport.QueuedCloser.
func (c *conn) CloseAfterQueued(code transport.CloseCode, reason string) {
	c.mu.Lock()
	c.closeAfterLocked(code, reason, true)
	c.mu.Unlock()
}

// closeLocked starts the close handshake: frames not yet started are
// dropped (a half-written one is finished so the stream stays parseable),
// the close frame is queued, and the wheel drops the socket if the peer
// does not answer within CloseTimeout.
func (c *conn) closeLocked(code transport.CloseCode, reason string) {
	c.closeAfterLocked(code, reason, false)
}

// closeAfterLocked is closeLocked; with keep, queued frames stay ahead of
// the close frame. The CloseTimeout deadline bounds both, so a peer that
// stopped reading still loses its socket in time.
func (c *conn) closeAfterLocked(code transport.CloseCode, reason string, keep bool) {
	if c.state != stateOpen {
		return
	}
	c.state = stateClosing
	c.closeCode = code
	c.account() // a closing connection no longer counts
	if q := c.out; q != nil && !keep {
		keep := 0
		if q.off > 0 {
			keep = 1
		}
		clear(q.frames[keep:])
		q.frames = q.frames[:keep]
		q.bytes = 0
		if keep == 1 {
			q.bytes = len(q.frames[0]) - q.off
			c.account()
			if q.drain != nil {
				close(q.drain) // closing: nothing more will be sent
				q.drain = nil
			}
		} else {
			c.releaseOut()
		}
	}
	c.deadline = toStamp(time.Now().Unix() + secs(c.l.s.cfg.CloseTimeout))
	c.writeLocked(closeFrame(code, reason))
	c.l.reschedule(c, c.deadline.unix())
}

// writeLocked queues b and has the loop flush the connection. The loop
// writes all of a connection's pending frames with one writev, so frames
// that arrive while it is busy — a burst of broadcasts, a join reply and
// its replay — share one syscall instead of paying one each, and the
// broadcaster's goroutine only appends (the loops write, one per core).
func (c *conn) writeLocked(b []byte) bool {
	if c.fd < 0 {
		return false
	}
	q := c.out
	if q == nil {
		q = outPool.Get().(*outQueue)
		q.since = time.Now().Unix()
		c.out = q
	}
	q.frames = append(q.frames, b)
	q.bytes += len(b)
	if c.outArmed {
		c.account()
	}
	if !c.dirty && !c.outArmed { // EPOLLOUT flushes an armed one anyway
		c.dirty = true
		c.l.markDirty(c)
	}
	return true
}

// brokenLocked handles a socket that failed a write (peer reset): the loop
// sees the hang-up and finishes it.
func (c *conn) brokenLocked() {
	if c.state == stateOpen {
		c.state = stateClosing
		c.deadline = toStamp(time.Now().Unix())
	}
	c.releaseOut()
	// Fails only if the peer already reset it: the loop sees the hang-up either way.
	_ = unix.Shutdown(int(c.fd), unix.SHUT_RDWR)
}

func (c *conn) armLocked(on bool) {
	if c.outArmed == on {
		return
	}
	c.outArmed = on
	if !c.watched {
		return // watch() arms it when the socket is added
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.fd, Pad: int32(c.gen)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	// Fails only for a socket already removed from the set (closing): nothing to arm.
	_ = unix.EpollCtl(c.l.epfd, unix.EPOLL_CTL_MOD, int(c.fd), &ev)
}

// flush writes the queue with writev: when the loop was asked to (dirty)
// or the socket became writable again (EPOLLOUT). What the socket does not
// take waits for EPOLLOUT, bounded by WriteTimeout.
func (c *conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dirty = false
	if c.fd < 0 {
		return
	}
	var iov [maxIovecs][]byte
	for c.out != nil && len(c.out.frames) > 0 {
		q := c.out
		n := 0
		for i, b := range q.frames {
			if i == maxIovecs {
				break
			}
			if i == 0 {
				b = b[q.off:]
			}
			iov[n] = b
			n++
		}
		w, err := writev(int(c.fd), iov[:n])
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				c.brokenLocked()
				return
			}
			if !c.outArmed {
				c.armLocked(true)
				c.l.reschedule(c, q.since+secs(c.l.s.cfg.WriteTimeout))
			}
			c.account()
			// The socket took what it could: wake the waiters the
			// writes so far let through.
			c.drainedLocked()
			return
		}
		q.bytes -= w
		done := 0
		for w > 0 {
			left := len(q.frames[done]) - q.off
			if w < left {
				q.off += w
				break
			}
			w -= left
			q.frames[done] = nil
			done++
			q.off = 0
		}
		q.frames = q.frames[:copy(q.frames, q.frames[done:])]
	}
	// Nothing left (or a close dropped the queue): stop asking for
	// EPOLLOUT, or level-triggered epoll spins the loop.
	c.releaseOut()
	c.armLocked(false)
}

// nextDue is when the wheel should look at c again (c.mu held).
func (c *conn) nextDue(now int64) int64 {
	cfg := &c.l.s.cfg
	var due int64
	switch c.state {
	case stateClosing:
		due = c.deadline.unix()
	default:
		if c.pinged {
			due = c.lastRead.unix() + secs(cfg.IdleTimeout)
		} else {
			due = c.lastRead.unix() + secs(cfg.PingInterval)
		}
		if c.out != nil {
			due = min(due, c.out.since+secs(cfg.WriteTimeout))
		}
		if c.deadline > 0 {
			due = min(due, c.deadline.unix())
		}
	}
	return max(due, now+1)
}

// writev writes bufs (at most maxIovecs) with one writev(2). The iovec
// array is on the stack: unix.Writev builds its own on the heap, an
// allocation per write, with every replay's hundred frames.
func writev(fd int, bufs [][]byte) (int, error) {
	var iov [maxIovecs]unix.Iovec
	n := 0
	for _, b := range bufs {
		if len(b) > 0 {
			iov[n].Base = &b[0]
			iov[n].SetLen(len(b))
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	for {
		w, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch e {
		case 0:
			return int(w), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

func validUTF8(b []byte) bool { return utf8.Valid(b) }
