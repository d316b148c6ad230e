package ws

import (
	"errors"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
)

const (
	stateOpen uint8 = iota
	stateClosing
	stateClosed
)

// maxIovecs bounds one writev when draining a queue.
const maxIovecs = 64

// conn is one upgraded connection. Fields under "mu" are shared with
// senders; the rest belong to the loop goroutine.
type conn struct {
	s      *Server
	l      *loop
	sess   transport.Session
	remote string
	gen    uint32

	mu            sync.Mutex
	fd            int // -1 once closed; only the loop closes it
	state         uint8
	watched       bool
	outArmed      bool
	closeCode     transport.CloseCode
	closeDeadline int64
	queue         [][]byte // frames waiting for the socket; shared, never modified
	qoff          int      // bytes of queue[0] already written
	qbytes        int
	queuedSince   int64
	expires       int64 // Unix seconds; 0 = never
	expireCode    transport.CloseCode
	expireReason  string

	// loop goroutine only
	pend     []byte // unfinished frame
	msg      []byte // unfinished fragmented message
	msgOp    byte
	lastRead int64
	pinged   bool

	// timing wheel (loop.mu)
	wprev, wnext *conn
	wslot        int32
	wdue         int64
}

var (
	_ transport.Conn    = (*conn)(nil)
	_ transport.Expirer = (*conn)(nil)
)

func (c *conn) RemoteAddr() string { return c.remote }

// ExpireAt implements transport.Expirer: the wheel closes the connection
// at t (second granularity).
func (c *conn) ExpireAt(t time.Time, code transport.CloseCode, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expires, c.expireCode, c.expireReason = t.Unix(), code, reason
	if c.state == stateOpen {
		c.l.reschedule(c, c.expires) // no-op before add, which files it by nextDue
	}
}

// Backlog implements transport.Conn.
func (c *conn) Backlog() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.qbytes
}

func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != stateOpen
}

// Send implements transport.Conn.
func (c *conn) Send(m *transport.Message) bool {
	b := m.Wire(buildFrame)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	if len(c.queue) > 0 && c.qbytes+len(b) > c.s.cfg.MaxQueueBytes {
		c.closeLocked(transport.CloseSlowConsumer, "slow consumer")
		return false
	}
	return c.writeLocked(b)
}

// Close implements transport.Conn.
func (c *conn) Close(code transport.CloseCode, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

// closeLocked starts the close handshake: frames not yet started are
// dropped (a half-written one is finished so the stream stays parseable),
// the close frame is queued, and the wheel drops the socket if the peer
// does not answer within CloseTimeout.
func (c *conn) closeLocked(code transport.CloseCode, reason string) {
	if c.state != stateOpen {
		return
	}
	c.state = stateClosing
	c.closeCode = code
	if len(c.queue) > 0 {
		keep := 0
		if c.qoff > 0 {
			keep = 1
		}
		for i := keep; i < len(c.queue); i++ {
			c.queue[i] = nil
		}
		c.queue = c.queue[:keep]
		c.qbytes = 0
		if keep == 1 {
			c.qbytes = len(c.queue[0]) - c.qoff
		}
	}
	c.closeDeadline = time.Now().Unix() + secs(c.s.cfg.CloseTimeout)
	c.writeLocked(closeFrame(code, reason))
	c.l.reschedule(c, c.closeDeadline)
}

// writeLocked writes b now if nothing is queued, and queues what the socket
// did not take.
func (c *conn) writeLocked(b []byte) bool {
	if c.fd < 0 {
		return false
	}
	if len(c.queue) > 0 {
		c.queue = append(c.queue, b)
		c.qbytes += len(b)
		return true
	}
	n, err := write(c.fd, b)
	if n == len(b) {
		return true
	}
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		c.brokenLocked()
		return false
	}
	c.queue = append(c.queue, b)
	c.qoff = n
	c.qbytes = len(b) - n
	c.queuedSince = time.Now().Unix()
	c.armLocked(true)
	c.l.reschedule(c, c.queuedSince+secs(c.s.cfg.WriteTimeout))
	return true
}

// brokenLocked handles a socket that failed a write (peer reset): the loop
// sees the hang-up and finishes it.
func (c *conn) brokenLocked() {
	if c.state == stateOpen {
		c.state = stateClosing
		c.closeDeadline = time.Now().Unix()
	}
	c.queue, c.qbytes, c.qoff = nil, 0, 0
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
}

func (c *conn) armLocked(on bool) {
	if c.outArmed == on {
		return
	}
	c.outArmed = on
	if !c.watched {
		return // watch() arms it when the socket is added
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd), Pad: int32(c.gen)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	unix.EpollCtl(c.l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

// flush drains the queue with writev once the socket is writable again.
func (c *conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var iov [maxIovecs][]byte
	for len(c.queue) > 0 && c.fd >= 0 {
		n := 0
		for i, b := range c.queue {
			if i == maxIovecs {
				break
			}
			if i == 0 {
				b = b[c.qoff:]
			}
			iov[n] = b
			n++
		}
		w, err := writev(c.fd, iov[:n])
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				c.brokenLocked()
			}
			return
		}
		c.qbytes -= w
		for w > 0 {
			left := len(c.queue[0]) - c.qoff
			if w < left {
				c.qoff += w
				break
			}
			w -= left
			c.queue[0] = nil
			c.queue = c.queue[1:]
			c.qoff = 0
		}
	}
	if len(c.queue) == 0 {
		c.queue = nil
		c.queuedSince = 0
		c.armLocked(false)
	}
}

// nextDue is when the wheel should look at c again (c.mu held).
func (c *conn) nextDue(now int64) int64 {
	cfg := &c.s.cfg
	var due int64
	switch c.state {
	case stateClosing:
		due = c.closeDeadline
	default:
		if c.pinged {
			due = c.lastRead + secs(cfg.IdleTimeout)
		} else {
			due = c.lastRead + secs(cfg.PingInterval)
		}
		if len(c.queue) > 0 {
			due = min(due, c.queuedSince+secs(cfg.WriteTimeout))
		}
		if c.expires > 0 {
			due = min(due, c.expires)
		}
	}
	return max(due, now+1)
}

func write(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

func writev(fd int, iov [][]byte) (int, error) {
	for {
		n, err := unix.Writev(fd, iov)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

func validUTF8(b []byte) bool { return utf8.Valid(b) }
