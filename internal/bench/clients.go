package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Client modes: what each connection does after the WebSocket handshake.
const (
	// ModePhoenix joins room:bench-<i%100> (Phoenix Channels v2) and
	// heartbeats every HeartbeatEvery.
	ModePhoenix = "phoenix"
	// ModeNATSWS speaks the NATS protocol over WebSocket: CONNECT, SUB
	// fabric.room.bench-<i%100>, PING, and answers the server's PINGs.
	ModeNATSWS = "nats-ws"
)

// ClientOptions configures one load-generator worker process.
type ClientOptions struct {
	Target         string        // ws:// URL
	N              int           // connections to open
	Source         string        // local (loopback) source address, e.g. 127.0.0.2
	Mode           string        // ModePhoenix or ModeNATSWS
	Offset         int           // index of this worker's first connection (for topic spread)
	Concurrency    int           // dials in flight
	HeartbeatEvery time.Duration // phoenix heartbeat period
	JoinTimeout    time.Duration // per connection: dial + handshake + join
}

// Report is one JSON line a worker prints on stdout.
type Report struct {
	Type   string `json:"type"` // "progress", "ready", "status", "error"
	Joined int64  `json:"joined"`
	Failed int64  `json:"failed"`
	Closed int64  `json:"closed"` // connections lost after joining
	Error  string `json:"error,omitempty"`
}

type benchConn struct {
	nc net.Conn
	rd io.Reader
	mu sync.Mutex // serialises frame writes
}

func (c *benchConn) write(op ws.OpCode, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewFrame(op, true, p)))
}

// readFrame returns the next data frame's payload, answering pings and
// returning io.EOF on a close frame.
func (c *benchConn) readFrame() ([]byte, error) {
	for {
		h, err := ws.ReadHeader(c.rd)
		if err != nil {
			return nil, err
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.rd, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		switch h.OpCode {
		case ws.OpPing:
			if err := c.write(ws.OpPong, p); err != nil {
				return nil, err
			}
		case ws.OpPong:
		case ws.OpClose:
			return nil, io.EOF
		default:
			return p, nil
		}
	}
}

// RunClients opens o.N connections, joins them, reports progress as JSON
// lines on stdout, and then keeps them open (heartbeating) until ctx is
// done. It returns an error if not every connection could be joined.
func RunClients(ctx context.Context, o ClientOptions, stdout io.Writer) error {
	if o.N <= 0 {
		return fmt.Errorf("clients: --n must be positive")
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 50
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = 30 * time.Second
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 20 * time.Second
	}
	if o.Mode != ModePhoenix && o.Mode != ModeNATSWS {
		return fmt.Errorf("clients: unknown mode %q (want %s or %s)", o.Mode, ModePhoenix, ModeNATSWS)
	}
	src := net.ParseIP(o.Source)
	if src == nil {
		return fmt.Errorf("clients: bad --source %q", o.Source)
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(stdout)
	report := func(r Report) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(r)
	}

	dialer := ws.Dialer{
		Timeout: o.JoinTimeout,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{
				LocalAddr: &net.TCPAddr{IP: src},
				// Pick the source port at connect time (4-tuple unique),
				// so TIME_WAIT from earlier runs does not exhaust ports.
				Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					err := rc.Control(func(fd uintptr) {
						serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
					})
					return errors.Join(err, serr)
				},
			}
			return d.DialContext(ctx, network, addr)
		},
	}

	var joined, failed, closed atomic.Int64
	conns := make([]*benchConn, o.N)
	var firstErr atomic.Value
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				report(Report{Type: "progress", Joined: joined.Load(), Failed: failed.Load()})
			}
		}
	}()
	for i := 0; i < o.N && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := openOne(ctx, dialer, o, o.Offset+i)
			<-sem
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			conns[i] = c
			joined.Add(1)
		}(i)
	}
	wg.Wait()
	close(stopProgress)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f := failed.Load(); f > 0 {
		msg, _ := firstErr.Load().(string)
		err := fmt.Errorf("clients: %d of %d connections failed; first: %s", f, o.N, msg)
		report(Report{Type: "error", Joined: joined.Load(), Failed: f, Error: err.Error()})
		return err
	}

	// Joined: now read (and discard) forever; count losses.
	for _, c := range conns {
		go func(c *benchConn) {
			for {
				p, err := c.readFrame()
				if err != nil {
					if ctx.Err() == nil {
						closed.Add(1)
					}
					return
				}
				if o.Mode == ModeNATSWS && bytes.Contains(p, []byte("PING\r\n")) {
					if err := c.write(ws.OpBinary, []byte("PONG\r\n")); err != nil {
						return
					}
				}
			}
		}(c)
	}
	report(Report{Type: "ready", Joined: joined.Load()})

	if o.Mode == ModePhoenix {
		go heartbeat(ctx, conns, o.HeartbeatEvery)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, c := range conns {
				c.nc.Close()
			}
			return nil
		case <-t.C:
			report(Report{Type: "status", Joined: joined.Load(), Closed: closed.Load()})
		}
	}
}

// heartbeat sends one Phoenix heartbeat per connection per period, spread
// evenly over the period.
func heartbeat(ctx context.Context, conns []*benchConn, period time.Duration) {
	step := period / time.Duration(len(conns))
	ref := 1000
	for {
		for _, c := range conns {
			select {
			case <-ctx.Done():
				return
			case <-time.After(step):
			}
			ref++
			msg := `[null,"` + strconv.Itoa(ref) + `","phoenix","heartbeat",{}]`
			_ = c.write(ws.OpText, []byte(msg))
		}
	}
}

func openOne(ctx context.Context, dialer ws.Dialer, o ClientOptions, i int) (*benchConn, error) {
	var nc net.Conn
	var br *bufio.Reader
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		nc, br, _, err = dialer.Dial(ctx, o.Target)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(100*(attempt+1)) * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	c := &benchConn{nc: nc, rd: nc}
	if br != nil {
		c.rd = br
	}
	_ = nc.SetDeadline(time.Now().Add(o.JoinTimeout))
	room := i % 100
	switch o.Mode {
	case ModePhoenix:
		topic := "room:bench-" + strconv.Itoa(room)
		join := `["1","1","` + topic + `","phx_join",{}]`
		if err := c.write(ws.OpText, []byte(join)); err != nil {
			nc.Close()
			return nil, err
		}
		for {
			p, err := c.readFrame()
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("join %s: %w", topic, err)
			}
			var msg [5]json.RawMessage
			if json.Unmarshal(p, &msg) != nil || string(msg[1]) != `"1"` || string(msg[3]) != `"phx_reply"` {
				continue // presence_state etc.
			}
			var reply struct {
				Status string `json:"status"`
			}
			_ = json.Unmarshal(msg[4], &reply)
			if reply.Status != "ok" {
				nc.Close()
				return nil, fmt.Errorf("join %s: %s", topic, p)
			}
			break
		}
	case ModeNATSWS:
		sub := "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nSUB fabric.room.bench-" + strconv.Itoa(room) + " 1\r\nPING\r\n"
		if err := c.write(ws.OpBinary, []byte(sub)); err != nil {
			nc.Close()
			return nil, err
		}
		for {
			p, err := c.readFrame()
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("nats connect: %w", err)
			}
			if bytes.HasPrefix(p, []byte("-ERR")) {
				nc.Close()
				return nil, fmt.Errorf("nats connect: %s", bytes.TrimSpace(p))
			}
			if bytes.Contains(p, []byte("PONG\r\n")) {
				break
			}
		}
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}
