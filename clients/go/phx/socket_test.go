package phx

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// A scripted in-process server (gobwas/ws server side): each test plays
// the gateway's part frame by frame, including things a well-behaved
// gateway seldom does (numeric refs, interleaved frames, stale join refs).

const testWait = 10 * time.Second

type fakeServer struct {
	t     *testing.T
	ln    net.Listener
	conns chan *fakeConn
}

type fakeConn struct {
	t *testing.T
	c net.Conn
}

func newFakeServer(t *testing.T) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, conns: make(chan *fakeConn, 8)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if _, err := ws.Upgrade(c); err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close() })
			s.conns <- &fakeConn{t: t, c: c}
		}
	}()
	return s
}

func (s *fakeServer) url() string { return "ws://" + s.ln.Addr().String() + "/socket" }

func (s *fakeServer) accept() *fakeConn {
	s.t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(testWait):
		s.t.Fatal("no connection")
		return nil
	}
}

// clientFrame is what the client sent, decoded.
type clientFrame struct {
	joinRef, ref, topic, event string
	payload                    map[string]any
	binary                     []byte
}

// next reads the client's next frame, skipping heartbeats.
func (c *fakeConn) next() clientFrame {
	c.t.Helper()
	for {
		c.c.SetReadDeadline(time.Now().Add(testWait))
		p, op, err := wsutil.ReadClientData(c.c)
		if err != nil {
			c.t.Fatalf("server read: %v", err)
		}
		var f clientFrame
		if op == ws.OpBinary {
			f.joinRef, f.ref, f.topic, f.event, f.binary = decodeClientPush(c.t, p)
			return f
		}
		fr, err := decodeText(p)
		if err != nil {
			c.t.Fatalf("client sent %s: %v", p, err)
		}
		if fr.event == eventHeartbeat {
			continue
		}
		f.joinRef, f.ref, f.topic, f.event = fr.joinRef, fr.ref, fr.topic, fr.event
		json.Unmarshal(fr.payload, &f.payload)
		return f
	}
}

func (c *fakeConn) expect(event string) clientFrame {
	c.t.Helper()
	f := c.next()
	if f.event != event {
		c.t.Fatalf("client sent %q (%+v), want %q", f.event, f, event)
	}
	return f
}

func (c *fakeConn) send(format string, args ...any) {
	c.t.Helper()
	if err := wsutil.WriteServerText(c.c, fmt.Appendf(nil, format, args...)); err != nil {
		c.t.Fatalf("server write: %v", err)
	}
}

func (c *fakeConn) sendBinaryBroadcast(topic, event string, payload []byte) {
	c.t.Helper()
	b := append([]byte{kindBroadcast, byte(len(topic)), byte(len(event))}, topic+event...)
	if err := wsutil.WriteServerBinary(c.c, append(b, payload...)); err != nil {
		c.t.Fatal(err)
	}
}

type msgLog struct {
	mu   sync.Mutex
	msgs []Message
	more chan struct{}
}

func newMsgLog() *msgLog { return &msgLog{more: make(chan struct{}, 1)} }

func (l *msgLog) add(m Message) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// wait returns the log once it has n messages.
func (l *msgLog) wait(t *testing.T, n int) []Message {
	t.Helper()
	deadline := time.After(testWait)
	for {
		l.mu.Lock()
		got := append([]Message(nil), l.msgs...)
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-l.more:
		case <-deadline:
			t.Fatalf("%d messages, want %d: %+v", len(got), n, got)
		}
	}
}

func describe(m Message) string {
	if m.Binary != nil {
		return fmt.Sprintf("%s:%x@%d", m.Event, m.Binary, m.Offset)
	}
	return fmt.Sprintf("%s:%s@%d", m.Event, m.Payload, m.Offset)
}

func fastOptions() Options {
	return Options{
		HeartbeatInterval: -1,
		Reconnect:         Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
		Rejoin:            Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testWait)
	t.Cleanup(cancel)
	return ctx
}

// The whole resume contract against a scripted server: offsets from the
// ref slot and fabric:offset, the rejoin's params, the outcome reported,
// a push waiting through a rejoin, phx_close.
func TestChannelLifecycle(t *testing.T) {
	srv := newFakeServer(t)
	type joinResult struct {
		ch  *Channel
		err error
	}
	var sock *Socket
	dialed := make(chan error, 1)
	go func() {
		var err error
		sock, err = Dial(testCtx(t), srv.url(), fastOptions())
		dialed <- err
	}()
	c1 := srv.accept()
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
	defer sock.Close()

	log := newMsgLog()
	resumes := make(chan Resume, 2)
	closed := make(chan struct{})
	joined := make(chan joinResult, 1)
	go func() {
		ch, err := sock.Join(testCtx(t), "room:a", map[string]any{"app": 1},
			OnMessage(log.add), OnResume(func(r Resume) { resumes <- r }), OnClose(func() { close(closed) }))
		joined <- joinResult{ch, err}
	}()
	j := c1.expect(eventJoin)
	if j.topic != "room:a" || j.joinRef != j.ref || fmt.Sprint(j.payload) != "map[app:1]" {
		t.Fatalf("join frame %+v", j)
	}
	// Refs echoed as JSON numbers (some servers do) still match.
	c1.send(`[%s,%s,"room:a","phx_reply",{"status":"ok","response":{"epoch":"E1","offset":10}}]`, j.joinRef, j.ref)
	jr := <-joined
	if jr.err != nil {
		t.Fatal(jr.err)
	}
	ch := jr.ch
	if p, ok := ch.Position(); !ok || p != (Position{"E1", 10}) {
		t.Fatalf("position %+v %v", p, ok)
	}

	c1.send(`[null,"11","room:a","m",{"i":11}]`)
	// A binary message, a frame of another topic, then its offset frame.
	c1.sendBinaryBroadcast("room:a", "bin", []byte{0xb1})
	c1.send(`[null,"5","room:zzz","m",{}]`)
	c1.send(`[null,"12","room:a","fabric:offset",{"offset":"12"}]`)
	// A binary message whose offset frame never comes (an older gateway):
	// delivered without an offset when the next frame of its topic arrives.
	c1.sendBinaryBroadcast("room:a", "bin", []byte{0xb2})
	c1.send(`[null,"14","room:a","m",{"i":14}]`)
	// Another join's message: dropped.
	c1.send(`["999",null,"room:a","m",{"stale":true}]`)
	// A direct push to this join: delivered, no offset.
	c1.send(`["%s",null,"room:a","direct",{}]`, j.joinRef)
	got := log.wait(t, 5)
	want := `[m:{"i":11}@11 bin:b1@12 bin:b2@0 m:{"i":14}@14 direct:{}@0]`
	var have []string
	for _, m := range got {
		have = append(have, describe(m))
	}
	if fmt.Sprint(have) != want {
		t.Fatalf("delivered %v\nwant      %s", have, want)
	}
	if p, _ := ch.Position(); p.Offset != 14 {
		t.Fatalf("position %+v", p)
	}

	// A binary message cut off before its offset frame, then the
	// connection drops: not delivered (the resume replays it).
	c1.sendBinaryBroadcast("room:a", "bin", []byte{0xb3})
	c1.c.Close()
	c2 := srv.accept()
	j2 := c2.expect(eventJoin)
	if fmt.Sprint(j2.payload) != "map[app:1 epoch:E1 offset:14]" || j2.joinRef == j.joinRef {
		t.Fatalf("rejoin %+v", j2)
	}
	c2.send(`["%s","%s","room:a","phx_reply",{"status":"ok","response":{"epoch":"E1","offset":"20","recovered":false,"reason":"history_gone"}}]`, j2.joinRef, j2.ref)
	r := <-resumes
	if r.Recovered || r.Reason != "history_gone" || r.From != (Position{"E1", 14}) || r.To != (Position{"E1", 20}) {
		t.Fatalf("resume %+v", r)
	}
	if n := len(log.wait(t, 5)); n != 5 {
		t.Fatalf("%d messages: the cut-off binary message was delivered", n)
	}

	// The server reports the channel crashed; a push made meanwhile waits
	// for the rejoin, then goes out on the new join.
	lost := make(chan error, 1)
	go func() { _, err := ch.Push(testCtx(t), "lost", nil); lost <- err }()
	c2.expect("lost")
	c2.send(`["%s","%s","room:a","phx_error",{}]`, j2.joinRef, j2.joinRef)
	if err := <-lost; !errors.Is(err, ErrDisconnected) {
		t.Fatalf("push unanswered when its channel crashed: %v", err)
	}
	for deadline := time.Now().Add(testWait); ch.Joined(); {
		if time.Now().After(deadline) {
			t.Fatal("phx_error did not end the join")
		}
		time.Sleep(time.Millisecond)
	}
	pushed := make(chan error, 1)
	var reply Reply
	go func() {
		var err error
		reply, err = ch.Push(testCtx(t), "go", map[string]int{"n": 1})
		pushed <- err
	}()
	j3 := c2.expect(eventJoin)
	if j3.payload["offset"] != "20" {
		t.Fatalf("rejoin after phx_error %+v", j3)
	}
	c2.send(`["%s","%s","room:a","phx_reply",{"status":"ok","response":{"epoch":"E1","offset":"20","recovered":true}}]`, j3.joinRef, j3.ref)
	if r := <-resumes; !r.Recovered || r.To.Offset != 20 {
		t.Fatalf("resume %+v", r)
	}
	p := c2.expect("go")
	if p.joinRef != j3.joinRef || fmt.Sprint(p.payload) != "map[n:1]" {
		t.Fatalf("push %+v after join %s", p, j3.joinRef)
	}
	// A binary reply (kind 1).
	rb := append([]byte{kindReply, byte(len(p.joinRef)), byte(len(p.ref)), 6, 2}, p.joinRef+p.ref+"room:a"+"ok"...)
	wsutil.WriteServerBinary(c2.c, append(rb, 0xaa))
	if err := <-pushed; err != nil || reply.Status != "ok" || string(reply.Binary) != "\xaa" {
		t.Fatalf("push: %+v %v", reply, err)
	}
	// Binary push frame.
	go ch.PushBinary(testCtx(t), "raw", []byte{1, 2})
	if b := c2.expect("raw"); string(b.binary) != "\x01\x02" || b.joinRef != j3.joinRef || b.topic != "room:a" {
		t.Fatalf("binary push %+v", b)
	}

	// The server ends the channel: no rejoin, pushes fail.
	c2.send(`["%s","%s","room:a","phx_close",{}]`, j3.joinRef, j3.joinRef)
	select {
	case <-closed:
	case <-time.After(testWait):
		t.Fatal("OnClose not called")
	}
	if _, err := ch.Push(testCtx(t), "x", nil); !errors.Is(err, ErrChannelClosed) {
		t.Fatalf("push after phx_close: %v", err)
	}
}

func TestJoinRefusedOrAbandoned(t *testing.T) {
	srv := newFakeServer(t)
	dialed := make(chan *Socket, 1)
	go func() {
		s, err := Dial(testCtx(t), srv.url(), fastOptions())
		if err != nil {
			t.Error(err)
		}
		dialed <- s
	}()
	c := srv.accept()
	sock := <-dialed
	defer sock.Close()

	errs := make(chan error, 1)
	go func() { _, err := sock.Join(testCtx(t), "room:x", nil); errs <- err }()
	j := c.expect(eventJoin)
	c.send(`["%s","%s","room:x","phx_reply",{"status":"error","response":{"reason":"unauthorized"}}]`, j.joinRef, j.ref)
	var re *ReplyError
	if err := <-errs; !errors.As(err, &re) || string(re.Reply.Response) != `{"reason":"unauthorized"}` {
		t.Fatalf("refused join: %v", err)
	}
	// Refused: no retry, and the topic is free again.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	go func() { _, err := sock.Join(ctx, "room:x", nil); errs <- err }()
	j = c.expect(eventJoin)
	// No reply: ctx ends, and the client leaves the join it may have made.
	if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("abandoned join: %v", err)
	}
	if l := c.expect(eventLeave); l.joinRef != j.joinRef || l.topic != "room:x" {
		t.Fatalf("leave %+v for join %s", l, j.joinRef)
	}
	// Without a deadline in ctx, Options.Timeout bounds the wait.
	sock.opts.Timeout = 50 * time.Millisecond
	go func() { _, err := sock.Join(context.Background(), "room:z", nil); errs <- err }()
	c.expect(eventJoin)
	if err := <-errs; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("join without deadline: %v", err)
	}
	c.expect(eventLeave)
	// Payloads must be objects.
	if _, err := sock.Join(testCtx(t), "room:y", []int{1}); err == nil {
		t.Fatal("array params accepted")
	}
}

// A message over MaxMessageSize closes the connection with 1009, and the
// socket reconnects; a server close frame reaches OnDisconnect.
func TestMaxMessageSizeAndCloseFrame(t *testing.T) {
	srv := newFakeServer(t)
	reasons := make(chan error, 4)
	opts := fastOptions()
	opts.MaxMessageSize = 100
	opts.OnDisconnect = func(err error) { reasons <- err }
	dialed := make(chan *Socket, 1)
	go func() {
		s, err := Dial(testCtx(t), srv.url(), opts)
		if err != nil {
			t.Error(err)
		}
		dialed <- s
	}()
	c := srv.accept()
	sock := <-dialed
	defer sock.Close()
	c.send(`[null,null,"room:a","big",{"x":"%0200d"}]`, 0)
	c.c.SetReadDeadline(time.Now().Add(testWait))
	h, err := ws.ReadHeader(c.c)
	if err != nil || h.OpCode != ws.OpClose || h.Length < 2 {
		t.Fatalf("after an oversized message the client sent %+v %v", h, err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.c, p); err != nil {
		t.Fatal(err)
	}
	ws.Cipher(p, h.Mask, 0)
	if code := binary.BigEndian.Uint16(p); code != uint16(ws.StatusMessageTooBig) {
		t.Fatalf("close code %d", code)
	}
	<-reasons
	c2 := srv.accept()
	wsutil.WriteServerMessage(c2.c, ws.OpClose, binary.BigEndian.AppendUint16(nil, 4001))
	var ce *CloseError
	if err := <-reasons; !errors.As(err, &ce) || ce.Code != 4001 {
		t.Fatalf("close frame reported as %v", err)
	}
	srv.accept() // and reconnects after that too
}
