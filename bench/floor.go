package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"golang.org/x/sys/unix"
)

// The floor (`--baseline floor`) is the least a server can do to deliver
// a message to N WebSocket clients: build the frame once and write it to
// each socket with one write(2), nothing else — no queue, no protocol
// state, no broker. Its server CPU per delivery is the machine's cost of
// one send on loopback, the limit for one syscall per delivery. It
// accepts the same Phoenix clients (answering their join, discarding
// heartbeats) and takes payloads, one a line, from a feed connection; it
// has no meaningful latency (it never queues) and no history or presence.

// floorServer is the state of RunFloorServer.
type floorServer struct {
	mu    sync.Mutex
	fds   map[int]struct{}
	snap  atomic.Pointer[[]int] // fds to write, rebuilt on change
	dirty atomic.Bool
	short atomic.Int64 // writes that did not take the whole frame
}

// RunFloorServer serves WebSocket clients on host:port and the payload
// feed on host:feedPort until ctx is done.
func RunFloorServer(ctx context.Context, host string, port, feedPort int, stdout io.Writer) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("floor-server: %w", err)
	}
	feed, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(feedPort)))
	if err != nil {
		ln.Close()
		return fmt.Errorf("floor-server: %w", err)
	}
	s := &floorServer{fds: map[int]struct{}{}}
	go func() { <-ctx.Done(); ln.Close(); feed.Close() }()
	go func() {
		for {
			c, err := feed.Accept()
			if err != nil {
				return
			}
			go s.serveFeed(c)
		}
	}()
	fmt.Fprintf(stdout, "floor-server listening on %s, feed on %s\n", ln.Addr(), feed.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			time.Sleep(10 * time.Millisecond) // EMFILE etc.: back off, keep serving
			continue
		}
		go s.serveConn(c)
	}
}

// serveConn upgrades, answers the join, registers the socket for writes
// and discards whatever else the client sends (heartbeats) until it
// closes.
func (s *floorServer) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	p, err := wsutil.ReadClientText(c)
	if err != nil {
		return
	}
	var join [5]json.RawMessage
	if json.Unmarshal(p, &join) != nil {
		return
	}
	reply := `[` + string(join[0]) + `,` + string(join[1]) + `,` + string(join[2]) + `,"phx_reply",{"status":"ok","response":{}}]`
	if err := wsutil.WriteServerText(c, []byte(reply)); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	if fd < 0 {
		return
	}
	s.mu.Lock()
	s.fds[fd] = struct{}{}
	s.dirty.Store(true)
	s.mu.Unlock()
	_, _ = io.Copy(io.Discard, c)
	s.mu.Lock()
	delete(s.fds, fd)
	s.dirty.Store(true)
	s.mu.Unlock()
}

func (s *floorServer) targets() []int {
	if s.dirty.Load() {
		s.mu.Lock()
		fds := make([]int, 0, len(s.fds))
		for fd := range s.fds {
			fds = append(fds, fd)
		}
		s.dirty.Store(false)
		s.snap.Store(&fds)
		s.mu.Unlock()
	}
	if p := s.snap.Load(); p != nil {
		return *p
	}
	return nil
}

// serveFeed reads payloads, one a line; "PING" is answered "PONG" once
// everything before it was written.
func (s *floorServer) serveFeed(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	var frame []byte
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		line = line[:len(line)-1]
		if string(line) == "PING" {
			if _, err := c.Write([]byte("PONG " + strconv.FormatInt(s.short.Load(), 10) + "\n")); err != nil {
				return
			}
			continue
		}
		frame = floorFrame(frame[:0], line)
		for _, fd := range s.targets() {
			if n, err := unix.Write(fd, frame); err != nil || n != len(frame) {
				s.short.Add(1)
			}
		}
	}
}

// floorFrame appends an unmasked WebSocket text frame carrying a Phoenix
// v2 broadcast of payload.
func floorFrame(b, payload []byte) []byte {
	const head, tail = `[null,null,"floor","bench",`, `]`
	n := len(head) + len(payload) + len(tail)
	b = append(b, 0x81)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n < 1<<16:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, head...)
	b = append(b, payload...)
	return append(b, tail...)
}

// floorPublisher feeds the floor server.
type floorPublisher struct {
	c net.Conn
	r *bufio.Reader
	p payload
	b []byte
}

func dialFloorPublisher(addr string, size int) (*floorPublisher, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &floorPublisher{c: c, r: bufio.NewReader(c), p: payload{size: size}}, nil
}

func (f *floorPublisher) publish() error {
	f.b = append(append(f.b[:0], f.p.next()...), '\n')
	_, err := f.c.Write(f.b)
	return err
}

// flush waits until the floor wrote everything published so far; a
// write that did not take a whole frame is an error (the floor does not
// queue).
func (f *floorPublisher) flush(timeout time.Duration) error {
	_ = f.c.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = f.c.SetDeadline(time.Time{}) }()
	if _, err := f.c.Write([]byte("PING\n")); err != nil {
		return err
	}
	line, err := f.r.ReadString('\n')
	if err != nil {
		return err
	}
	var short int64
	if _, err := fmt.Sscanf(line, "PONG %d\n", &short); err != nil {
		return fmt.Errorf("floor feed: %q", line)
	}
	if short > 0 {
		return fmt.Errorf("floor: %d writes did not take the whole frame", short)
	}
	return nil
}

func (f *floorPublisher) close() { f.c.Close() }
