package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// Client modes: what each connection does after the WebSocket handshake.
const (
	// ModePhoenix joins a topic (Phoenix Channels v2), default
	// room:bench-<i%100>, and heartbeats every HeartbeatEvery.
	ModePhoenix = "phoenix"
	// ModeNATSWS speaks the NATS protocol over WebSocket: CONNECT, SUB to a
	// subject (default fabric.room.bench-<i%100>), PING, and answers the
	// server's PINGs.
	ModeNATSWS = "nats-ws"
	// ModeCentrifugo speaks Centrifugo's JSON client protocol: connect
	// with a JWT, subscribe to the topic (a Centrifugo channel, namespace
	// before the colon), answer the server's pings.
	ModeCentrifugo = "centrifugo"
)

// TimestampKey starts the field a benchmark payload carries its publish
// time in: {"bench_t":<unix nanos>,…}. Workers scan every delivery for it.
const TimestampKey = `{"bench_t":`

// ClientOptions configures one load-generator worker process.
type ClientOptions struct {
	Target string // ws:// URL
	N      int    // connections to open
	Source string // local (loopback) source address, e.g. 127.0.0.2
	Mode   string // ModePhoenix or ModeNATSWS
	// Deflate offers permessage-deflate and inflates what arrives
	// compressed (SystemFabricDeflate, SystemCentrifugoDeflate).
	Deflate bool
	// Topic is the Phoenix topic (phoenix mode) or NATS subject (nats-ws
	// mode) each connection joins; "%d" in it is replaced by i%100, "%i"
	// by i (one channel per connection). Empty:
	// room:bench-%d or fabric.room.bench-%d.
	Topic          string
	Offset         int           // index of this worker's first connection (for topic spread)
	Concurrency    int           // dials in flight
	Retries        int           // extra dial attempts per connection; <0: none
	HeartbeatEvery time.Duration // phoenix heartbeat period
	JoinTimeout    time.Duration // per connection: dial + handshake + join
	StatusEvery    time.Duration // period of "status" reports (default 1 s)
	// RefusedFor is how long a connection keeps coming back after 503 or
	// 429 refusals (overload, honouring Retry-After) before it counts as
	// failed; default 60 s.
	RefusedFor time.Duration
	// Control, if set, is read for commands, one a line: "stats" answers
	// with a "stats" report (deliveries and latency histogram). EOF on
	// Control stops the worker (the parent is gone).
	Control io.Reader
	// Resume keeps each connection's join position and adds the control
	// commands "drop" and "resume" (resumeclients.go).
	Resume bool
	// ResumeWant is how many messages each connection must receive after
	// its resume to count as recovered.
	ResumeWant int
}

// Report is one JSON line a worker prints on stdout.
type Report struct {
	Type       string `json:"type"` // "progress", "ready", "status", "stats", "error"
	Joined     int64  `json:"joined"`
	Failed     int64  `json:"failed"`
	Closed     int64  `json:"closed"`                // connections lost after joining
	DialErrors int64  `json:"dial_errors,omitempty"` // failed attempts other than refusals
	Refused    int64  `json:"refused,omitempty"`     // 503/429 answers (retried)
	Delivered  int64  `json:"delivered,omitempty"`   // payloads carrying TimestampKey received
	// JoinNanos (ready, error) is the worker's time from its first dial to
	// its last completed join.
	JoinNanos int64 `json:"join_ns,omitempty"`
	// Recovered, NotRecovered (resumed): resumes answered recovered with
	// every missed message received, and the others; ResumeNanos: from the
	// "resume" command to the last recovered connection.
	Recovered    int64 `json:"recovered,omitempty"`
	NotRecovered int64 `json:"not_recovered,omitempty"`
	ResumeNanos  int64 `json:"resume_ns,omitempty"`
	// JoinHist (ready): per-connection dial+handshake+join time, µs.
	JoinHist [][2]int64 `json:"join_hist,omitempty"`
	// Hist (stats): delivery latency, µs, publish time to receipt;
	// (resumed) each recovered connection's time from the "resume"
	// command to its last missed message, µs.
	Hist  [][2]int64 `json:"hist,omitempty"`
	Error string     `json:"error,omitempty"`
}

type benchConn struct {
	nc  net.Conn
	rd  io.Reader
	mu  sync.Mutex // serialises frame writes
	hdr [ws.MaxHeaderSize - 2]byte

	zbuf []byte   // the last inflated message (Deflate)
	pos  *joinPos // the join reply's position (resume workers only)
}

func (c *benchConn) write(op ws.OpCode, p []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ws.WriteFrame(c.nc, ws.MaskFrame(ws.NewFrame(op, true, p)))
}

// readFrame returns the next data frame's payload in *buf (reused),
// answering pings and returning io.EOF on a close frame.
func (c *benchConn) readFrame(r io.Reader, buf *[]byte) ([]byte, error) {
	for {
		h, err := ws.ReadHeaderBuffer(r, c.hdr[:])
		if err != nil {
			return nil, err
		}
		if h.Length > 16<<20 {
			return nil, fmt.Errorf("frame of %d bytes", h.Length)
		}
		if int64(cap(*buf)) < h.Length {
			*buf = make([]byte, h.Length)
		}
		p := (*buf)[:h.Length]
		if _, err := io.ReadFull(r, p); err != nil {
			return nil, err
		}
		if h.Masked {
			ws.Cipher(p, h.Mask, 0)
		}
		if h.Rsv1() {
			return inflateInto(p, &c.zbuf)
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

// worker is the state of one RunClients process.
type worker struct {
	o          ClientOptions
	hbMu       sync.Mutex
	hbConns    []*benchConn // joined connections, heartbeated from their join on
	dropping   atomic.Bool  // connections are being closed on purpose
	delivered  atomic.Int64
	closed     atomic.Int64
	dialErrors atomic.Int64
	refused    atomic.Int64
	lat        Hist
	joinLat    Hist
	resumeLat  Hist // resume command to recovered, µs (resume workers)
}

// record scans one payload for TimestampKey and counts the delivery;
// false if it carried none.
func (w *worker) record(p []byte, now int64) bool {
	i := bytes.Index(p, []byte(TimestampKey))
	if i < 0 {
		return false
	}
	var t int64
	digits := 0
	for _, b := range p[i+len(TimestampKey):] {
		if b < '0' || b > '9' {
			break
		}
		t = t*10 + int64(b-'0')
		digits++
	}
	if digits == 0 {
		return false
	}
	w.delivered.Add(1)
	w.lat.Add((now - t) / 1000)
	return true
}

// readLoop reads one joined connection until it fails, counting
// deliveries; in nats-ws mode it parses the NATS protocol stream (MSG
// payloads, PING) across frame boundaries.
func (w *worker) readLoop(ctx context.Context, c *benchConn) {
	r := bufio.NewReaderSize(c.rd, 2048)
	buf := make([]byte, 512)
	var pend []byte
	for {
		p, err := c.readFrame(r, &buf)
		if err != nil {
			if ctx.Err() == nil && !w.dropping.Load() {
				w.closed.Add(1)
			}
			return
		}
		now := time.Now().UnixNano()
		if w.o.Mode == ModePhoenix {
			w.record(p, now)
			continue
		}
		if w.o.Mode == ModeCentrifugo {
			if err := w.centrifugoFrame(c, p, now); err != nil {
				if ctx.Err() == nil {
					w.closed.Add(1)
				}
				c.nc.Close()
				return
			}
			continue
		}
		pend = append(pend, p...)
		n, err := w.natsStream(c, pend, now)
		if err != nil {
			if ctx.Err() == nil {
				w.closed.Add(1)
			}
			c.nc.Close()
			return
		}
		pend = pend[:copy(pend, pend[n:])]
	}
}

// centrifugoFrame counts the publications in one frame of Centrifugo's
// JSON protocol (several replies a frame, newline-delimited) and answers
// a ping (an empty reply, "{}") with a pong ("{}").
func (w *worker) centrifugoFrame(c *benchConn, p []byte, now int64) error {
	for len(p) > 0 {
		line := p
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = p[:i], p[i+1:]
		} else {
			p = nil
		}
		if string(line) == "{}" {
			if err := c.write(ws.OpText, []byte("{}")); err != nil {
				return err
			}
			continue
		}
		w.record(line, now)
	}
	return nil
}

// natsStream handles the complete NATS protocol messages at the start of
// p and returns how many bytes it consumed.
func (w *worker) natsStream(c *benchConn, p []byte, now int64) (int, error) {
	done := 0
	for {
		rest := p[done:]
		eol := bytes.Index(rest, []byte("\r\n"))
		if eol < 0 {
			return done, nil
		}
		line := rest[:eol]
		switch {
		case bytes.HasPrefix(line, []byte("MSG ")):
			sp := bytes.LastIndexByte(line, ' ')
			size, err := strconv.Atoi(string(line[sp+1:]))
			if err != nil || size < 0 {
				return done, fmt.Errorf("bad MSG line %q", line)
			}
			end := eol + 2 + size + 2
			if len(rest) < end {
				return done, nil
			}
			w.record(rest[eol+2:eol+2+size], now)
			done += end
			continue
		case bytes.Equal(line, []byte("PING")):
			if err := c.write(ws.OpBinary, []byte("PONG\r\n")); err != nil {
				return done, err
			}
		case bytes.HasPrefix(line, []byte("-ERR")):
			return done, fmt.Errorf("nats: %s", line)
		}
		done += eol + 2
	}
}

// RunClients opens o.N connections, joins them, reports progress as JSON
// lines on stdout, and then keeps them open (heartbeating, counting
// deliveries) until ctx is done. It returns an error if not every
// connection could be joined.
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
	if o.StatusEvery <= 0 {
		o.StatusEvery = time.Second
	}
	if o.Retries < 0 {
		o.Retries = 0
	}
	if o.RefusedFor <= 0 {
		o.RefusedFor = 60 * time.Second
	}
	if o.Mode != ModePhoenix && o.Mode != ModeNATSWS && o.Mode != ModeCentrifugo {
		return fmt.Errorf("clients: unknown mode %q (want %s, %s or %s)", o.Mode, ModePhoenix, ModeNATSWS, ModeCentrifugo)
	}
	if o.Topic == "" {
		o.Topic = "room:bench-%d"
		if o.Mode == ModeNATSWS {
			o.Topic = "fabric.room.bench-%d"
		}
	}
	src := net.ParseIP(o.Source)
	if src == nil {
		return fmt.Errorf("clients: bad --source %q", o.Source)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &worker{o: o}
	var outMu sync.Mutex
	enc := json.NewEncoder(stdout)
	report := func(r Report) {
		outMu.Lock()
		defer outMu.Unlock()
		_ = enc.Encode(r)
	}
	resumeCmds := make(chan string, 4)
	if o.Control != nil {
		go func() {
			sc := bufio.NewScanner(o.Control)
			for sc.Scan() {
				switch cmd := strings.TrimSpace(sc.Text()); cmd {
				case "stats":
					report(Report{Type: "stats", Delivered: w.delivered.Load(), Closed: w.closed.Load(), Hist: w.lat.Sparse()})
				case "drop", "resume":
					if o.Resume {
						resumeCmds <- cmd
					}
				}
			}
			cancel() // parent gone or done with us
		}()
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
	if o.Deflate {
		dialer.Extensions = deflateOffer()
	}

	var joined, failed atomic.Int64
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
				report(Report{Type: "progress", Joined: joined.Load(), Failed: failed.Load(), DialErrors: w.dialErrors.Load(), Refused: w.refused.Load()})
			}
		}
	}()
	if o.Mode == ModePhoenix {
		// From each connection's join on, not once all joined: a slow
		// join phase (a loaded machine) would otherwise outlast the
		// server's idle timeout for the first ones.
		go w.heartbeat(ctx, o.HeartbeatEvery)
	}
	start := time.Now()
	var lastJoin atomic.Int64
	for i := 0; i < o.N && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t0 := time.Now()
			c, err := w.openOne(ctx, dialer, o.Offset+i, nil)
			<-sem
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			now := time.Now()
			w.joinLat.Add(now.Sub(t0).Microseconds())
			for {
				old := lastJoin.Load()
				if now.UnixNano() <= old || lastJoin.CompareAndSwap(old, now.UnixNano()) {
					break
				}
			}
			conns[i] = c
			w.heartbeatTo(c)
			joined.Add(1)
		}(i)
	}
	wg.Wait()
	close(stopProgress)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	joinNanos := lastJoin.Load() - start.UnixNano()
	if f := failed.Load(); f > 0 {
		msg, _ := firstErr.Load().(string)
		err := fmt.Errorf("clients: %d of %d connections failed; first: %s", f, o.N, msg)
		report(Report{Type: "error", Joined: joined.Load(), Failed: f, DialErrors: w.dialErrors.Load(), Refused: w.refused.Load(), JoinNanos: joinNanos, Error: err.Error()})
		for _, c := range conns {
			if c != nil {
				c.nc.Close()
			}
		}
		return err
	}

	// Joined: now read forever, counting deliveries and losses.
	for _, c := range conns {
		go w.readLoop(ctx, c)
	}
	report(Report{Type: "ready", Joined: joined.Load(), DialErrors: w.dialErrors.Load(), Refused: w.refused.Load(), JoinNanos: joinNanos, JoinHist: w.joinLat.Sparse()})

	if o.Resume {
		go w.resumeControl(ctx, dialer, conns, resumeCmds, report)
	}
	t := time.NewTicker(o.StatusEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, c := range conns {
				c.nc.Close()
			}
			return nil
		case <-t.C:
			report(Report{Type: "status", Joined: joined.Load(), Closed: w.closed.Load(), Delivered: w.delivered.Load()})
		}
	}
}

// heartbeatTo adds c to the connections heartbeat serves.
func (w *worker) heartbeatTo(c *benchConn) {
	w.hbMu.Lock()
	w.hbConns = append(w.hbConns, c)
	w.hbMu.Unlock()
}

// heartbeatNone forgets every connection (they were dropped on purpose).
func (w *worker) heartbeatNone() {
	w.hbMu.Lock()
	w.hbConns = nil
	w.hbMu.Unlock()
}

// heartbeat sends one Phoenix heartbeat per joined connection per period,
// spread evenly over the period.
func (w *worker) heartbeat(ctx context.Context, period time.Duration) {
	t := time.NewTimer(period / 10)
	defer t.Stop()
	ref := 1000
	for {
		w.hbMu.Lock()
		conns := w.hbConns[:len(w.hbConns):len(w.hbConns)]
		w.hbMu.Unlock()
		step := period / 10
		if len(conns) > 0 {
			step = period / time.Duration(len(conns))
		}
		if len(conns) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(step)
			}
			continue
		}
		for _, c := range conns {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(step)
			}
			ref++
			msg := `[null,"` + strconv.Itoa(ref) + `","phoenix","heartbeat",{}]`
			_ = c.write(ws.OpText, []byte(msg))
		}
	}
}

// openOne dials, upgrades and joins connection i; a Phoenix join carries
// resume as its params (nil: none).
func (w *worker) openOne(ctx context.Context, dialer ws.Dialer, i int, resume *joinPos) (*benchConn, error) {
	o := w.o
	var nc net.Conn
	var br *bufio.Reader
	var err error
	giveUp := time.Now().Add(o.RefusedFor)
	for attempt := 0; ; attempt++ {
		var retryAfter time.Duration
		d := dialer
		d.OnStatusError = func(status int, _ []byte, resp io.Reader) {
			if status == 503 || status == 429 {
				retryAfter = parseRetryAfter(resp)
			}
		}
		nc, br, _, err = d.Dial(ctx, o.Target)
		if err == nil || ctx.Err() != nil {
			break
		}
		// Refused for overload (503, 429): come back after Retry-After
		// (default 1 s) with ±50 % jitter, like a polite client; that is
		// not a failure until RefusedFor has passed.
		var se ws.StatusError
		if errors.As(err, &se) && (se == 503 || se == 429) && time.Now().Before(giveUp) {
			w.refused.Add(1)
			if retryAfter <= 0 {
				retryAfter = time.Second
			}
			attempt--
			if !sleepJitter(ctx, retryAfter) {
				return nil, ctx.Err()
			}
			continue
		}
		w.dialErrors.Add(1)
		if attempt >= o.Retries {
			break
		}
		if !sleepJitter(ctx, time.Duration(100*(attempt+1))*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	c := &benchConn{nc: nc, rd: nc}
	if br != nil {
		c.rd = br
	}
	if o.ResumeWant > 0 {
		// Buffered from the join reply on: the replay follows it.
		c.rd = bufio.NewReaderSize(c.rd, resumeReadBuffer)
	}
	_ = nc.SetDeadline(time.Now().Add(o.JoinTimeout))
	topic := o.Topic
	if strings.Contains(topic, "%d") {
		topic = strings.ReplaceAll(topic, "%d", strconv.Itoa(i%100))
	}
	if strings.Contains(topic, "%i") {
		topic = strings.ReplaceAll(topic, "%i", strconv.Itoa(i)) // one channel per connection
	}
	buf := make([]byte, 512)
	switch o.Mode {
	case ModePhoenix:
		params := "{}"
		if resume != nil {
			params = `{"epoch":"` + resume.Epoch + `","offset":"` + resume.Offset + `"}`
		}
		join := `["1","1","` + topic + `","phx_join",` + params + `]`
		if err := c.write(ws.OpText, []byte(join)); err != nil {
			nc.Close()
			return nil, err
		}
		for {
			p, err := c.readFrame(c.rd, &buf)
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("join %s: %w", topic, err)
			}
			var msg [5]json.RawMessage
			if json.Unmarshal(p, &msg) != nil || string(msg[1]) != `"1"` || string(msg[3]) != `"phx_reply"` {
				continue // presence_state etc.
			}
			var reply struct {
				Status   string  `json:"status"`
				Response joinPos `json:"response"`
			}
			_ = json.Unmarshal(msg[4], &reply)
			if reply.Status != "ok" {
				nc.Close()
				return nil, fmt.Errorf("join %s: %s", topic, p)
			}
			if o.Resume {
				c.pos = &reply.Response
			}
			break
		}
	case ModeCentrifugo:
		if err := centrifugoHandshake(c, i, topic, &buf); err != nil {
			nc.Close()
			return nil, err
		}
	case ModeNATSWS:
		sub := "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nSUB " + topic + " 1\r\nPING\r\n"
		if err := c.write(ws.OpBinary, []byte(sub)); err != nil {
			nc.Close()
			return nil, err
		}
		for {
			p, err := c.readFrame(c.rd, &buf)
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

// parseRetryAfter reads the header lines of a refused handshake's
// response for Retry-After (seconds); 0 if absent.
func parseRetryAfter(resp io.Reader) time.Duration {
	br := bufio.NewReaderSize(resp, 512)
	for i := 0; i < 64; i++ {
		line, err := br.ReadString('\n')
		line = strings.TrimSpace(line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Retry-After") {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 && n < 3600 {
				return time.Duration(n) * time.Second
			}
			return 0
		}
		if line == "" && i > 0 || err != nil {
			return 0
		}
	}
	return 0
}

// sleepJitter sleeps d × [0.5, 1.5); false if ctx ended first.
func sleepJitter(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d/2 + rand.N(d))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
