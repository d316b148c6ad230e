// Package phxclient is a Phoenix wire probe for tests: it speaks v1 and v2
// JSON and decodes v2 binary frames, sends anything (malformed frames,
// arbitrary refs, a socket left unread), and exposes every received frame
// and the close code in order, so tests can assert exactly what the
// gateway sent. It is deliberately not a client (no reconnect, no
// channel state): tests that take a client's view, and applications, use
// the public Go client in clients/go. One reader goroutine per connection.
package phxclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"

	"github.com/fabric-rt/fabric/gateway/phoenix"
)

// Msg is one frame received from the server.
type Msg struct {
	JoinRef phoenix.Ref
	Ref     phoenix.Ref
	Topic   string
	Event   string
	Payload json.RawMessage // JSON payloads
	Bytes   []byte          // binary payloads
	Binary  bool
	Raw     []byte // the whole text frame as received
	// Compressed: the message arrived compressed (RSV1).
	Compressed bool
	// Close is set (and nothing else) for the close frame; CloseCode 1006
	// stands for a connection that ended without one.
	Close     bool
	CloseCode int
}

// Client is one connection.
type Client struct {
	conn net.Conn
	v    phoenix.Version
	wmu  sync.Mutex
	ref  int

	mu     sync.Mutex
	cond   *sync.Cond
	queue  []Msg
	closed bool

	deflate bool // permessage-deflate negotiated
	// Stats of what was read (read goroutine writes, anyone reads).
	wireBytes, messages, compressed atomic.Int64
}

// Deflated reports whether permessage-deflate was negotiated.
func (c *Client) Deflated() bool { return c.deflate }

// ReadStats returns the data messages read, how many of them arrived
// compressed, and their payload bytes on the wire (before inflating).
func (c *Client) ReadStats() (messages, compressed, wireBytes int64) {
	return c.messages.Load(), c.compressed.Load(), c.wireBytes.Load()
}

// Options for Dial.
type Options struct {
	// ReadBuffer sets SO_RCVBUF before the handshake (slow-reader tests).
	ReadBuffer int
	// NoRead leaves the socket unread after the handshake (slow-reader tests).
	NoRead bool
	// LocalIP binds the client to a source address (load tests spread over
	// 127.0.0.x to get more ports).
	LocalIP string
	// Deflate offers permessage-deflate (as browsers do); compressed
	// messages are inflated on read.
	Deflate bool
}

// Dial connects to url (ws://host/socket/websocket?vsn=…) speaking v.
func Dial(ctx context.Context, url string, v phoenix.Version, opts Options) (*Client, error) {
	d := ws.Dialer{
		Timeout: 10 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{}
			if opts.LocalIP != "" {
				nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(opts.LocalIP)}
			}
			c, err := nd.DialContext(ctx, network, addr)
			if err == nil && opts.ReadBuffer > 0 {
				_ = c.(*net.TCPConn).SetReadBuffer(opts.ReadBuffer) // a hint: the default still works
			}
			return c, err
		},
	}
	if opts.Deflate {
		d.Extensions = []httphead.Option{wsflate.Parameters{ClientMaxWindowBits: 15}.Option()}
	}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, err
	}
	if br != nil {
		ws.PutReader(br)
	}
	c := &Client{conn: conn, v: v}
	for _, opt := range hs.Extensions {
		var p wsflate.Parameters
		c.deflate = c.deflate || p.Parse(opt) == nil
	}
	c.cond = sync.NewCond(&c.mu)
	if !opts.NoRead {
		go c.read()
	}
	return c, nil
}

// NextRef returns a fresh ref.
func (c *Client) NextRef() string {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ref++
	return strconv.Itoa(c.ref)
}

// Send sends one JSON message; payload is marshalled unless it is a
// json.RawMessage.
func (c *Client) Send(joinRef, ref phoenix.Ref, topic, event string, payload any) error {
	raw, ok := payload.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(payload)
		if err != nil {
			return err
		}
		raw = b
	}
	var b []byte
	if c.v == phoenix.V1 {
		m := map[string]any{"topic": topic, "event": event, "payload": raw, "ref": refJSON(ref)}
		if joinRef.Valid {
			m["join_ref"] = refJSON(joinRef)
		}
		b, _ = json.Marshal(m)
	} else {
		b = phoenix.AppendMessage(nil, phoenix.V2, joinRef, ref, topic, event, raw)
	}
	return c.WriteFrame(ws.OpText, b)
}

func refJSON(r phoenix.Ref) any {
	switch {
	case !r.Valid:
		return nil
	case r.Raw:
		return json.RawMessage(r.S)
	}
	return r.S
}

// SendBinary sends a v2 binary push (kind 0).
func (c *Client) SendBinary(joinRef, ref, topic, event string, payload []byte) error {
	b := []byte{0, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(event))}
	b = append(b, joinRef...)
	b = append(b, ref...)
	b = append(b, topic...)
	b = append(b, event...)
	b = append(b, payload...)
	return c.WriteFrame(ws.OpBinary, b)
}

// WriteFrame writes one masked frame with the given opcode.
func (c *Client) WriteFrame(op ws.OpCode, p []byte) error {
	return c.writeFrame(op, 0, p)
}

// WriteCompressed writes p as one compressed message (RSV1 set,
// permessage-deflate without context takeover).
func (c *Client) WriteCompressed(op ws.OpCode, p []byte) error {
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		return err
	}
	_, _ = w.Write(p) // to memory
	_ = w.Flush()
	return c.writeFrame(op, ws.Rsv(true, false, false), bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff}))
}

func (c *Client) writeFrame(op ws.OpCode, rsv byte, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	h := ws.Header{Fin: true, Rsv: rsv, OpCode: op, Length: int64(len(p)), Masked: true, Mask: ws.NewMask()}
	buf := append([]byte(nil), p...)
	ws.Cipher(buf, h.Mask, 0)
	c.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := ws.WriteHeader(c.conn, h); err != nil {
		return err
	}
	_, err := c.conn.Write(buf)
	return err
}

// Join sends phx_join and returns its ref (which is also the join_ref).
func (c *Client) Join(topic string, params any) (string, error) {
	ref := c.NextRef()
	if params == nil {
		params = map[string]any{}
	}
	return ref, c.Send(phoenix.R(ref), phoenix.R(ref), topic, phoenix.EventJoin, params)
}

// JoinWait joins and waits for the reply, returning its status and response.
func (c *Client) JoinWait(topic string, params any, timeout time.Duration) (string, json.RawMessage, error) {
	ref, err := c.Join(topic, params)
	if err != nil {
		return "", nil, err
	}
	return c.WaitReply(ref, timeout)
}

// WaitReply waits for the phx_reply with ref, leaving other frames queued.
func (c *Client) WaitReply(ref string, timeout time.Duration) (string, json.RawMessage, error) {
	m, err := c.NextMatch(timeout, func(m Msg) bool {
		return m.Close || (m.Event == phoenix.EventReply && m.Ref.Valid && m.Ref.S == ref)
	})
	if err != nil {
		return "", nil, err
	}
	if m.Close {
		return "", nil, fmt.Errorf("connection closed (%d) while waiting for reply %s", m.CloseCode, ref)
	}
	var r struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		return "", nil, err
	}
	return r.Status, r.Response, nil
}

// ErrTimeout is returned when no matching frame arrived in time.
var ErrTimeout = errors.New("phxclient: timeout")

// Next returns the next frame.
func (c *Client) Next(timeout time.Duration) (Msg, error) {
	return c.NextMatch(timeout, func(Msg) bool { return true })
}

// NextMatch returns the first queued or future frame matching match;
// earlier non-matching frames stay queued.
func (c *Client) NextMatch(timeout time.Duration, match func(Msg) bool) (Msg, error) {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for i, m := range c.queue {
			if match(m) {
				c.queue = append(c.queue[:i], c.queue[i+1:]...)
				return m, nil
			}
		}
		if c.closed {
			return Msg{}, io.EOF
		}
		if !time.Now().Before(deadline) {
			return Msg{}, ErrTimeout
		}
		c.cond.Wait()
	}
}

// Pending returns the number of queued frames.
func (c *Client) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// Close closes the TCP connection without a close handshake.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the raw connection (for slow-reader tests that read it later).
func (c *Client) Conn() net.Conn { return c.conn }

func (c *Client) push(m Msg) {
	c.mu.Lock()
	c.queue = append(c.queue, m)
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *Client) read() {
	defer func() {
		c.mu.Lock()
		c.closed = true
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	var frag []byte // a fragmented message so far (RFC 6455 §5.4)
	var fragOp ws.OpCode
	var fragZ bool // the fragmented message is compressed
	for {
		c.conn.SetReadDeadline(time.Time{})
		h, err := ws.ReadHeader(c.conn)
		if err != nil {
			c.push(Msg{Close: true, CloseCode: 1006})
			return
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c.conn, p); err != nil {
			c.push(Msg{Close: true, CloseCode: 1006})
			return
		}
		op := h.OpCode
		z := h.Rsv1()
		if !op.IsControl() {
			c.wireBytes.Add(int64(len(p)))
		}
		switch {
		case op == ws.OpContinuation:
			frag = append(frag, p...)
			if !h.Fin {
				continue
			}
			op, p, frag, z = fragOp, frag, nil, fragZ
		case !h.Fin && (op == ws.OpText || op == ws.OpBinary):
			fragOp, frag, fragZ = op, append(frag[:0], p...), z
			continue
		}
		if op == ws.OpText || op == ws.OpBinary {
			c.messages.Add(1)
			if z {
				c.compressed.Add(1)
				r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
				if p, err = io.ReadAll(r); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
					c.push(Msg{Close: true, CloseCode: 1007})
					return
				}
			}
		}
		switch op {
		case ws.OpClose:
			code := 1005
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
			}
			c.push(Msg{Close: true, CloseCode: code})
			// Complete the handshake like a browser would.
			_ = c.WriteFrame(ws.OpClose, p[:min(2, len(p))]) // the server may already be gone
			return
		case ws.OpPing:
			_ = c.WriteFrame(ws.OpPong, p) // a failed write ends the next read too
		case ws.OpText:
			m, err := decodeText(c.v, p)
			if err != nil {
				m = Msg{Event: "!undecodable", Payload: json.RawMessage(strconv.Quote(err.Error() + ": " + string(p)))}
			}
			m.Raw = p
			m.Compressed = z
			c.push(m)
		case ws.OpBinary:
			m, err := decodeBinary(p)
			if err != nil {
				m = Msg{Event: "!undecodable"}
			}
			m.Compressed = z
			c.push(m)
		}
	}
}

func decodeText(v phoenix.Version, p []byte) (Msg, error) {
	var m Msg
	if v == phoenix.V1 {
		var o struct {
			Topic   string          `json:"topic"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Ref     json.RawMessage `json:"ref"`
			JoinRef json.RawMessage `json:"join_ref"`
		}
		if err := json.Unmarshal(p, &o); err != nil {
			return m, err
		}
		if o.JoinRef != nil {
			return m, errors.New("v1 frame carries join_ref")
		}
		m.Topic, m.Event, m.Payload = o.Topic, o.Event, o.Payload
		m.Ref = refOf(o.Ref)
		return m, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(p, &a); err != nil {
		return m, err
	}
	if len(a) != 5 {
		return m, fmt.Errorf("%d elements", len(a))
	}
	m.JoinRef, m.Ref = refOf(a[0]), refOf(a[1])
	if err := json.Unmarshal(a[2], &m.Topic); err != nil {
		return m, err
	}
	if err := json.Unmarshal(a[3], &m.Event); err != nil {
		return m, err
	}
	m.Payload = a[4]
	return m, nil
}

// refOf reads a ref slot: null (or absent), a string, or any other JSON
// value kept raw, as the server echoes the client's refs.
func refOf(raw json.RawMessage) phoenix.Ref {
	var s *string
	switch err := json.Unmarshal(raw, &s); {
	case len(raw) == 0 || err == nil && s == nil:
		return phoenix.Null
	case err == nil:
		return phoenix.R(*s)
	}
	return phoenix.RawRef(string(raw))
}

func decodeBinary(p []byte) (Msg, error) {
	m := Msg{Binary: true}
	if len(p) < 3 {
		return m, errors.New("short")
	}
	str := func(off, n int) (string, int, error) {
		if off+n > len(p) {
			return "", 0, errors.New("truncated")
		}
		return string(p[off : off+n]), off + n, nil
	}
	var err error
	switch p[0] {
	case 2: // broadcast
		off := 3
		if m.Topic, off, err = str(off, int(p[1])); err != nil {
			return m, err
		}
		if m.Event, off, err = str(off, int(p[2])); err != nil {
			return m, err
		}
		m.Bytes = p[off:]
	case 0: // push
		if len(p) < 4 {
			return m, errors.New("short")
		}
		off := 4
		var jr string
		if jr, off, err = str(off, int(p[1])); err != nil {
			return m, err
		}
		m.JoinRef = phoenix.R(jr)
		if m.Topic, off, err = str(off, int(p[2])); err != nil {
			return m, err
		}
		if m.Event, off, err = str(off, int(p[3])); err != nil {
			return m, err
		}
		m.Bytes = p[off:]
	default:
		return m, fmt.Errorf("kind %d", p[0])
	}
	return m, nil
}
