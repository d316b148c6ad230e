package ws

import (
	"errors"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
)

const (
	readBufferSize = 64 << 10
	// wheelSlots is the timing wheel's span in seconds; a deadline further
	// out is parked in the last slot and re-filed when reached.
	wheelSlots = 64
	// readsPerEvent bounds the reads one readable event may take, so one
	// busy client cannot starve the rest of the loop (level-triggered epoll
	// reports it again).
	readsPerEvent = 4
)

// loop is one epoll instance with its connections, its read buffer and its
// timing wheel. Only run's goroutine reads sockets, closes fds and calls
// Session methods.
type loop struct {
	s    *Server
	epfd int
	efd  int // eventfd that wakes the loop for posted tasks

	mu       sync.Mutex
	conns    []*conn // by fd
	gen      uint32
	tasks    []func()
	dirty    []*conn // connections with frames to write
	kicked   bool    // the eventfd was written since dirty was last taken
	wheel    [wheelSlots]*conn
	lastTick int64

	// owned by the loop goroutine
	buf      []byte
	now      int64 // coarse clock (Unix seconds), refreshed per wakeup
	stopping bool
	due      []*conn
	flushing []*conn // the dirty list being written (reused)
	// dirtyPeak is the longest dirty list taken since the last tick
	// (trimLists).
	dirtyPeak int
	inflate   inflater
	budget    int // bytes the current read turn may still inflate
}

func newLoop(s *Server) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(efd)
		return nil, err
	}
	now := time.Now().Unix()
	return &loop{s: s, epfd: epfd, efd: efd, buf: make([]byte, readBufferSize), now: now, lastTick: now}, nil
}

// slot is fd's index in l.conns. A connection's loop is chosen by its fd
// (fd mod loops, see Server.Upgrade), so each loop's table covers only its
// own share of the fd space instead of all of it.
func (l *loop) slot(fd int) int { return fd / len(l.s.loops) }

// post runs f on the loop goroutine.
func (l *loop) post(f func()) {
	l.mu.Lock()
	l.tasks = append(l.tasks, f)
	l.mu.Unlock()
	var one = [8]byte{1}
	// An eventfd write fails only when its counter is about to overflow,
	// and then the loop is already due to wake.
	_, _ = unix.Write(l.efd, one[:])
}

// markDirty puts c on the flush list (c.mu held, c.dirty just set). The
// eventfd is written once per batch: while the loop is busy, further
// connections only join the list.
func (l *loop) markDirty(c *conn) {
	l.mu.Lock()
	l.dirty = append(l.dirty, c)
	kick := !l.kicked
	l.kicked = true
	l.mu.Unlock()
	if kick {
		var one = [8]byte{1}
		_, _ = unix.Write(l.efd, one[:]) // see post
	}
}

// flushDirty writes every connection on the flush list, until it stays
// empty (loop goroutine).
func (l *loop) flushDirty() {
	for {
		l.mu.Lock()
		list := l.dirty
		l.dirty = l.flushing[:0]
		l.kicked = false
		l.mu.Unlock()
		if len(list) == 0 {
			l.flushing = list
			return
		}
		l.dirtyPeak = max(l.dirtyPeak, len(list))
		for i, c := range list {
			c.flush()
			list[i] = nil
		}
		l.flushing = list
	}
}

// trimFrom is the flush list capacity (connections) that trimLists lets
// a loop keep whatever its bursts.
const trimFrom = 256

// trimLists gives back the flush lists a burst grew once a second went by
// whose bursts were at most a quarter of their size: a broadcast to every
// member of a big channel makes both lists as long as the loop has
// connections, 16 bytes per connection kept for good otherwise. Traffic
// that keeps the bursts big keeps the lists (no regrowing per message).
// Loop goroutine, once per tick.
func (l *loop) trimLists() {
	peak := l.dirtyPeak
	l.dirtyPeak = 0
	if c := cap(l.flushing); c > trimFrom && peak <= c/4 {
		l.flushing = nil
	}
	l.mu.Lock()
	if c := cap(l.dirty); c > trimFrom && peak <= c/4 && len(l.dirty) == 0 {
		l.dirty = nil
	}
	l.mu.Unlock()
}

// add registers a freshly upgraded connection. Bytes that arrived with the
// handshake are parsed on the loop before the socket is watched, so message
// order is kept.
func (l *loop) add(c *conn, early []byte) {
	now := time.Now().Unix()
	c.mu.Lock()
	c.lastRead = toStamp(now)
	due := c.nextDue(now)
	c.mu.Unlock()
	l.mu.Lock()
	l.gen++
	c.gen = l.gen
	i := l.slot(int(c.fd))
	for i >= len(l.conns) {
		l.conns = append(l.conns, make([]*conn, len(l.conns)/4+1024)...)
	}
	l.conns[i] = c
	l.insert(c, due)
	l.mu.Unlock()
	if len(early) == 0 {
		l.watch(c)
		return
	}
	l.post(func() {
		l.budget = inflateBudget
		if l.consume(c, early) {
			l.watch(c)
			l.pauseIf(c)
		}
	})
}

func (l *loop) watch(c *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: c.fd, Pad: int32(c.gen)}
	if c.outArmed {
		ev.Events |= unix.EPOLLOUT
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, int(c.fd), &ev); err != nil {
		l.s.cfg.Logger.Error("ws: epoll add failed", "err", err)
		_ = unix.Shutdown(int(c.fd), unix.SHUT_RDWR) // already logged; the conn is closed by its owner
	}
	c.watched = true
}

func (l *loop) lookup(fd int, gen uint32) *conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := l.slot(fd)
	if fd < 0 || i >= len(l.conns) {
		return nil
	}
	if c := l.conns[i]; c != nil && c.gen == gen {
		return c
	}
	return nil
}

func (l *loop) snapshot() []*conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*conn
	for _, c := range l.conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		timeout := int(1000 - time.Now().UnixMilli()%1000)
		n, err := unix.EpollWait(l.epfd, events, timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			l.s.cfg.Logger.Error("ws: epoll_wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
		}
		l.now = time.Now().Unix()
		for i := 0; i < n; i++ {
			ev := events[i]
			fd := int(ev.Fd)
			if fd == l.efd {
				l.runTasks()
				continue
			}
			c := l.lookup(fd, uint32(ev.Pad))
			if c == nil {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				c.flush()
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.readable(c)
				if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					l.finish(c, transport.CloseAbnormal)
				}
			}
		}
		l.flushDirty()
		// Sockets that stopped taking bytes in this turn started to
		// count (flush): a frame queued before that counted nowhere, so
		// the Send that queued it could not have seen the total go over.
		if b := l.s.cfg.Budget; b.Over() {
			b.Reclaim()
		}
		if l.stopping {
			for _, c := range l.snapshot() {
				l.finish(c, transport.CloseGoingAway)
			}
			unix.Close(l.epfd)
			unix.Close(l.efd)
			return
		}
		if l.now > l.lastTick {
			l.tick(l.now)
			l.trimLists()
		}
	}
}

func (l *loop) runTasks() {
	var b [8]byte
	_, _ = unix.Read(l.efd, b[:]) // only resets the counter: EAGAIN means nobody posted
	l.mu.Lock()
	tasks := l.tasks
	l.tasks = nil
	l.mu.Unlock()
	for _, f := range tasks {
		f()
	}
}

// readable reads what the socket has, parses whole frames straight out of
// the loop's buffer and keeps only an unfinished tail on the connection.
func (l *loop) readable(c *conn) {
	if c.paused {
		return // its resume task is queued; the socket keeps its bytes
	}
	l.budget = inflateBudget
	for range readsPerEvent {
		if c.fd < 0 {
			return
		}
		n, err := unix.Read(int(c.fd), l.buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				return
			}
			l.finish(c, transport.CloseAbnormal)
			return
		}
		if n == 0 {
			l.finish(c, transport.CloseAbnormal)
			return
		}
		c.lastRead = toStamp(l.now)
		c.pinged = false
		if !l.consume(c, l.buf[:n]) || l.pauseIf(c) {
			return
		}
		if n < len(l.buf) {
			return
		}
	}
}

// pauseIf queues c's resume when consume stopped on the inflate budget:
// the rest of its input is parsed in a later turn, after the other ready
// connections, and its socket is not read until then (level-triggered
// epoll keeps reporting it; readable skips it).
func (l *loop) pauseIf(c *conn) bool {
	if !c.paused {
		return false
	}
	l.post(func() {
		c.paused = false
		if c.fd < 0 {
			return
		}
		l.budget = inflateBudget
		if l.consume(c, nil) {
			l.pauseIf(c)
		}
	})
	return true
}

// consume parses frames from data (prefixed by the connection's pending
// tail). It returns false once the connection is finished.
func (l *loop) consume(c *conn, data []byte) bool {
	if c.failed {
		return true // waiting for the peer to hang up or the close timeout
	}
	max := l.s.cfg.MaxMessageSize
	if c.in != nil && len(c.in.pend) > 0 {
		c.in.pend = append(c.in.pend, data...)
		data = c.in.pend
	}
	off := 0
	for off < len(data) {
		h, ok, err := parseHeader(data[off:], max, c.deflate)
		if err != nil {
			l.protocolError(c, err)
			return c.fd >= 0
		}
		if !ok {
			break
		}
		// A fragment that would take its message over the cap is refused
		// before its payload is buffered, so the bytes held for a
		// connection (pending frame plus message so far) stay within one
		// header plus MaxMessageSize.
		if h.op == opContinuation && c.in != nil && c.in.op != 0 && int64(len(c.in.msg))+h.length > int64(max) {
			l.protocolError(c, errTooBig)
			return c.fd >= 0
		}
		if int64(len(data)-off-h.size) < h.length {
			break
		}
		payload := data[off+h.size : off+h.size+int(h.length)]
		unmask(payload, h.mask)
		off += h.size + int(h.length)
		if !l.frame(c, h, payload) {
			return c.fd >= 0
		}
		if l.budget < 0 && off < len(data) {
			c.paused = true
			break
		}
	}
	rest := data[off:]
	switch {
	case len(rest) == 0:
		if c.in != nil {
			c.in.pend = c.in.pend[:0]
			if c.in.op == 0 {
				c.releaseIn()
			}
		}
	case c.in != nil && len(c.in.pend) > 0:
		n := copy(c.in.pend, rest) // rest is a suffix of pend itself
		c.in.pend = c.in.pend[:n]
	default:
		if c.in == nil {
			c.in = partialPool.Get().(*partial)
		}
		c.in.pend = append(c.in.pend[:0], rest...)
	}
	return true
}

func unmask(p []byte, mask [4]byte) {
	for i := range p {
		p[i] ^= mask[i&3]
	}
}

// frame handles one complete frame. It returns false to stop parsing this
// connection's input (it is closing or gone).
func (l *loop) frame(c *conn, h header, payload []byte) bool {
	if c.closing() && h.op != opClose {
		return true // draining toward the peer's close frame
	}
	switch h.op {
	case opPing:
		c.mu.Lock()
		pong := appendFrameHeader(make([]byte, 0, 2+len(payload)), opPong, len(payload))
		c.writeLocked(append(pong, payload...))
		c.mu.Unlock()
	case opPong:
	case opClose:
		code := transport.CloseNoStatus
		switch {
		case len(payload) == 1:
			l.protocolError(c, errControl)
			return false
		case len(payload) >= 2:
			code = transport.CloseCode(uint16(payload[0])<<8 | uint16(payload[1]))
			if !validCloseCode(uint16(code)) {
				l.protocolError(c, errCloseCode)
				return false
			}
			if !validUTF8(payload[2:]) {
				l.protocolError(c, errCloseUTF8)
				return false
			}
		}
		if !c.closing() {
			// Echo the peer's code, then drop the socket: the close
			// handshake is complete from our side.
			echo := code
			if echo == transport.CloseNoStatus {
				echo = transport.CloseNormal
			}
			c.Close(echo, "")
			c.mu.Lock()
			c.closeCode = code
			c.mu.Unlock()
		}
		l.finish(c, code)
		return false
	case opText, opBinary:
		if c.in != nil && c.in.op != 0 {
			l.protocolError(c, errInterleaved)
			return false
		}
		if !h.fin {
			if c.in == nil {
				c.in = partialPool.Get().(*partial)
			}
			c.in.op = h.op
			c.in.rsv1 = h.rsv1
			c.in.msg = append(c.in.msg[:0], payload...)
			return true
		}
		return l.deliver(c, h.op, h.rsv1, payload)
	case opContinuation:
		if c.in == nil || c.in.op == 0 {
			l.protocolError(c, errContinuation)
			return false
		}
		if len(c.in.msg)+len(payload) > l.s.cfg.MaxMessageSize {
			l.protocolError(c, errTooBig)
			return false
		}
		c.in.msg = append(c.in.msg, payload...)
		if h.fin {
			// The message is handed over before the buffer is reused:
			// sessions copy what they keep.
			op, msg := c.in.op, c.in.msg
			c.in.op = 0
			ok := l.deliver(c, op, c.in.rsv1, msg)
			if c.in != nil {
				c.in.msg = c.in.msg[:0]
			}
			return ok
		}
	}
	return true
}

// deliver hands a whole message to the session, inflating it first when
// it is compressed (the cap then applies to the inflated bytes, and the
// inflated bytes count against the read turn's budget).
func (l *loop) deliver(c *conn, op byte, compressed bool, p []byte) bool {
	if compressed {
		var err error
		if p, err = l.inflate.inflate(p, l.s.cfg.MaxMessageSize); err != nil {
			l.protocolError(c, err)
			return false
		}
		l.budget -= len(p)
	}
	if op == opText && !validUTF8(p) {
		l.protocolError(c, errTextUTF8)
		return false
	}
	c.sess.HandleMessage(op == opBinary, p)
	return !c.closing()
}

// protocolError fails the connection: the close frame with err's code is
// queued and input held for it is dropped, along with whatever it sends
// from now on (consume discards it).
func (l *loop) protocolError(c *conn, err error) {
	c.failed = true
	c.in = nil // not pooled: consume may still hold a slice of it
	var pe *protocolError
	if errors.As(err, &pe) {
		c.Close(pe.code, pe.reason)
		return
	}
	c.Close(transport.CloseProtocolError, err.Error())
}

// finish ends a connection for good: the fd leaves epoll and is closed, the
// session hears HandleClose exactly once. Loop goroutine only.
func (l *loop) finish(c *conn, code transport.CloseCode) {
	// Queued frames (the echo of a peer's close frame, above all) go out
	// before the fd closes, as far as the socket takes them now.
	c.flush()
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if c.closeCode != 0 {
		code = c.closeCode
	}
	fd := int(c.fd)
	c.fd = -1
	c.state = stateClosed
	c.releaseOut()
	watched := c.watched
	c.mu.Unlock()

	if watched {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil) // close below removes it anyway
	}
	unix.Close(fd)
	l.mu.Lock()
	if i := l.slot(fd); i < len(l.conns) && l.conns[i] == c {
		l.conns[i] = nil
	}
	l.remove(c)
	l.mu.Unlock()
	// Not pooled: finish can run while consume still parses this input.
	c.in = nil
	l.s.open.Add(-1)
	l.s.countClose(code)
	c.sess.HandleClose(code)
}

// --- timing wheel (l.mu held) ---

func (l *loop) insert(c *conn, due int64) {
	if due <= l.lastTick {
		due = l.lastTick + 1
	}
	if due-l.lastTick >= wheelSlots {
		due = l.lastTick + wheelSlots - 1
	}
	i := due % wheelSlots
	c.wdue = toStamp(due)
	c.wprev = nil
	c.wnext = l.wheel[i]
	if c.wnext != nil {
		c.wnext.wprev = c
	}
	l.wheel[i] = c
}

func (l *loop) remove(c *conn) {
	if c.wdue == 0 {
		return
	}
	if c.wprev != nil {
		c.wprev.wnext = c.wnext
	} else {
		l.wheel[c.wdue.unix()%wheelSlots] = c.wnext
	}
	if c.wnext != nil {
		c.wnext.wprev = c.wprev
	}
	c.wprev, c.wnext, c.wdue = nil, nil, 0
}

// reschedule moves c earlier on the wheel when due is sooner than its slot.
// A connection that is off the wheel is being checked by the tick, which
// re-files it under c.mu and so sees the new state.
func (l *loop) reschedule(c *conn, due int64) {
	l.mu.Lock()
	if c.wdue != 0 && due < c.wdue.unix() {
		l.remove(c)
		l.insert(c, due)
	}
	l.mu.Unlock()
}

func (l *loop) tick(now int64) {
	l.mu.Lock()
	due := l.due[:0]
	from := l.lastTick + 1
	if now-from >= wheelSlots {
		from = now - wheelSlots + 1
	}
	for t := from; t <= now; t++ {
		for c := l.wheel[t%wheelSlots]; c != nil; {
			next := c.wnext
			if c.wdue.unix() <= now {
				l.remove(c)
				due = append(due, c)
			}
			c = next
		}
	}
	l.lastTick = now
	l.mu.Unlock()
	for i, c := range due {
		l.check(c, now)
		due[i] = nil
	}
	l.due = due[:0]
}

// check applies c's deadlines and files it again.
func (l *loop) check(c *conn, now int64) {
	cfg := &l.s.cfg
	c.mu.Lock()
	finish := false
	switch c.state {
	case stateClosed:
		c.mu.Unlock()
		return
	case stateClosing:
		finish = now >= c.deadline.unix()
	case stateOpen:
		switch {
		case c.deadline > 0 && now >= c.deadline.unix():
			c.closeLocked(c.expireCode, c.l.s.expiry.reason(c.expireCode))
		case c.out != nil && now-c.out.since >= secs(cfg.WriteTimeout):
			c.closeLocked(transport.CloseSlowConsumer, "write timeout")
		case now-c.lastRead.unix() >= secs(cfg.IdleTimeout):
			c.closeLocked(transport.CloseHeartbeatTimeout, "idle timeout")
		case !c.pinged && now-c.lastRead.unix() >= secs(cfg.PingInterval):
			c.pinged = true
			c.writeLocked(pingFrame)
		}
	}
	if !finish {
		l.mu.Lock()
		l.insert(c, c.nextDue(now))
		l.mu.Unlock()
	}
	c.mu.Unlock()
	if finish {
		l.finish(c, transport.CloseAbnormal)
	}
}

func secs(d time.Duration) int64 {
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
