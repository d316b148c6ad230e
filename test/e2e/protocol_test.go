package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// phoenix.js with a logger set reads payload.status of every message it
// receives; a null payload throws there (in Node with ws, the exception
// escapes the message handler and nothing after it is delivered). The
// fabric:offset frame after a binary broadcast is the one Fabric frame
// that could carry one.
func TestPhoenixJSWithLoggerTakesBinaryBroadcasts(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), map[string]any{}, map[string]any{"debug": true}); err != nil {
		t.Fatal(err)
	}
	if status, resp := p.Join("room:logged", nil); status != "ok" {
		t.Fatalf("join: %s %s", status, resp)
	}
	body := []byte{0, 1, 2, 0xff}
	f.publish("fabric.room.logged", "blob", body)
	f.publish("fabric.room.logged", "after", []byte(`{"n":1}`))

	e := p.MustNext(10*time.Second, "blob", phxnode.IsMsg("room:logged", "blob"))
	if !e.Binary || !bytes.Equal(e.Bytes(), body) {
		t.Fatalf("blob: binary=%v bytes=%v", e.Binary, e.Bytes())
	}
	off := p.MustNext(10*time.Second, "fabric:offset", phxnode.IsMsg("room:logged", "fabric:offset"))
	var payload struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(off.Payload, &payload); err != nil || payload.Offset == "" || payload.Offset != off.RefString() {
		t.Fatalf("fabric:offset payload %s ref %q: want {\"offset\": ref}", off.Payload, off.RefString())
	}
	p.MustNext(10*time.Second, "the message after the binary one", phxnode.IsMsg("room:logged", "after"))
	if fatal := p.Drain(phxnode.IsEv("fatal")); len(fatal) > 0 {
		t.Fatalf("phoenix.js threw: %v", fatal)
	}
	if strings.Contains(p.Stderr(), "TypeError") {
		t.Fatalf("phoenix.js threw:\n%s", p.Stderr())
	}
}

// framesAt masks text frames into one buffer, so that they reach the
// gateway in one TCP write (and so one read: the loop handles them all
// before it flushes anything).
func framesAt(frames ...string) []byte {
	var buf bytes.Buffer
	for _, f := range frames {
		p := []byte(f)
		h := ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(p)), Masked: true, Mask: ws.NewMask()}
		ws.Cipher(p, h.Mask, 0)
		ws.WriteHeader(&buf, h)
		buf.Write(p)
	}
	return buf.Bytes()
}

// Python's phxsocket and other community clients send numeric refs; the
// Phoenix server echoes any JSON value back unchanged.
func TestNumericRefsOverWebSocket(t *testing.T) {
	f := startFabric(t, nil)
	for _, v := range []phoenix.Version{phoenix.V2, phoenix.V1} {
		c := f.dial(v, phxclient.Options{})
		frames := []string{`[null,0,"phoenix","heartbeat",{}]`, `[1,1,"chat:num","phx_join",{}]`, `[1,2,"chat:num","shout",{"a":1}]`}
		want := []string{`[null,0,"phoenix","phx_reply",{"status":"ok","response":{}}]`,
			`[1,1,"chat:num","phx_reply",{"status":"ok","response":{}}]`,
			`[1,2,"chat:num","phx_reply",{"status":"ok","response":{}}]`}
		if v == phoenix.V1 {
			frames = []string{`{"topic":"phoenix","event":"heartbeat","payload":{},"ref":0}`,
				`{"topic":"chat:num","event":"phx_join","payload":{},"ref":1,"join_ref":1}`,
				`{"topic":"chat:num","event":"shout","payload":{"a":1},"ref":2,"join_ref":1}`}
			want = []string{`{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":0}`,
				`{"topic":"chat:num","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":1}`,
				`{"topic":"chat:num","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":2}`}
		}
		for i, fr := range frames {
			if err := c.WriteFrame(ws.OpText, []byte(fr)); err != nil {
				t.Fatal(err)
			}
			m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close || m.Event == phoenix.EventReply })
			if err != nil || m.Close || string(m.Raw) != want[i] {
				t.Fatalf("v%d %s: got %s (close %v %d), %v; want %s", v, fr, m.Raw, m.Close, m.CloseCode, err, want[i])
			}
		}
	}
}

// Close 4029 (join flood) first sends the replies already queued: the
// flooder learns its first join succeeded, then that the rest were limited.
func TestRateLimitCloseFlushesReplies(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.JoinRate = 0.5 }) // burst 1
	other := f.dial(phoenix.V2, phxclient.Options{})
	if s, _, err := other.JoinWait("chat:flush", nil, wait); s != "ok" || err != nil {
		t.Fatal(s, err)
	}
	c := f.dial(phoenix.V2, phxclient.Options{})
	// The first join finds the channel already there and is answered at
	// once; the next ones are over the rate; past ten refusals per burst
	// the connection is closed.
	frames := []string{`["1","1","chat:flush","phx_join",{}]`}
	for i := range 15 {
		r := fmt.Sprint(10 + i)
		frames = append(frames, `["`+r+`","`+r+`","chat:f`+r+`","phx_join",{}]`)
	}
	if _, err := c.Conn().Write(framesAt(frames...)); err != nil {
		t.Fatal(err)
	}
	var got []phxclient.Msg
	for {
		m, err := c.Next(wait)
		if err != nil {
			t.Fatalf("after %d frames: %v", len(got), err)
		}
		if m.Close {
			if m.CloseCode != 4029 {
				t.Fatalf("close %d, want 4029", m.CloseCode)
			}
			break
		}
		got = append(got, m)
	}
	if len(got) == 0 || string(got[0].Raw) != `["1","1","chat:flush","phx_reply",{"status":"ok","response":{}}]` {
		t.Fatalf("the successful join's reply was not sent before the close; got %d frames", len(got))
	}
	if n := len(got) - 1; n != 11 {
		t.Fatalf("%d rate_limited replies before the close, want 11", n)
	}
	for _, m := range got[1:] {
		if !strings.Contains(string(m.Raw), `"reason":"rate_limited"`) {
			t.Fatalf("unexpected frame %s", m.Raw)
		}
	}
}

// phoenix.js joining a topic with a lone surrogate gets invalid_topic on
// that very channel (not a join to "room:\uFFFD", whose reply it would
// never match).
func TestPhoenixJSLoneSurrogateTopic(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, nil); err != nil {
		t.Fatal(err)
	}
	raw, err := p.DoRaw(map[string]any{"cmd": "join", "topic": json.RawMessage(`"room:\ud800"`),
		"params": map[string]any{}, "leaveOnError": true, "timeout": 5000})
	if err != nil {
		t.Fatal(err)
	}
	var r phxnode.JoinResult
	if err := json.Unmarshal(raw, &r); err != nil || r.Status != "error" || string(r.Response) != `{"reason":"invalid_topic"}` {
		t.Fatalf("join: %s", raw)
	}
	if got := f.interest("fabric.room.>"); got > 1 { // the stream's own
		t.Fatalf("%d subscriptions on fabric.room.>", got)
	}
}

// Pushes named like the server's own events are refused with a reason,
// over WebSocket and LongPoll, published or routed; none reaches another
// member or a service.
func TestPhoenixJSReservedPushes(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"game": {Pushes: namespace.PushesRequest}}
	})
	reached := make(chan string, 100)
	if _, err := f.nc.Subscribe("fabric_in.game.>", func(m *nats.Msg) {
		reached <- m.Header.Get("Fabric-Event")
		m.Respond([]byte(`{}`))
	}); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()
	for _, longpoll := range []bool{false, true} {
		p := phxnode.Start(t)
		if err := p.Connect(f.socketURL(), nil, map[string]any{"longpoll": longpoll}); err != nil {
			t.Fatal(err)
		}
		for _, topic := range []string{"room:res", "game:1"} {
			if s, resp := p.Join(topic, nil); s != "ok" {
				t.Fatalf("join %s: %s %s", topic, s, resp)
			}
			for _, ev := range []string{"phx_reply", "chan_reply_5", "presence_diff", "presence_state", "fabric:offset"} {
				if s, resp := p.Push(topic, ev, map[string]any{"x": 1}); s != "error" || string(resp) != `{"reason":"reserved_event"}` {
					t.Fatalf("longpoll=%v %s %s: %s %s", longpoll, topic, ev, s, resp)
				}
			}
		}
		if s, _ := p.Push("game:1", "move", nil); s != "ok" {
			t.Fatalf("a plain routed push: %s", s)
		}
		if got := <-reached; got != "move" {
			t.Fatalf("the service got %q", got)
		}
	}
	select {
	case ev := <-reached:
		t.Fatalf("the service got %q", ev)
	default:
	}
}

// Over the bus's size cap, a push is refused as too_large, not as a
// generic publish failure.
func TestPushTooLarge(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.MaxMessageSize = 2 << 20 })
	c := f.dial(phoenix.V2, phxclient.Options{})
	jr, _ := c.Join("chat:big", nil)
	if s, _, err := c.WaitReply(jr, wait); s != "ok" || err != nil {
		t.Fatal(s, err)
	}
	ref := c.NextRef()
	big := json.RawMessage(`{"b":"` + strings.Repeat("x", 1500<<10) + `"}`) // over NATS's 1 MB max_payload
	if err := c.Send(phoenix.R(jr), phoenix.R(ref), "chat:big", "big", big); err != nil {
		t.Fatal(err)
	}
	if s, resp, err := c.WaitReply(ref, wait); s != "error" || string(resp) != `{"reason":"too_large"}` || err != nil {
		t.Fatalf("%s %s %v", s, resp, err)
	}
}

// A routed push answered with bytes reaches phoenix.js as a binary reply
// (an ArrayBuffer response, as Phoenix's {:binary, data}); over LongPoll
// as {"base64"}; a JSON answer that is not an object is refused.
func TestPhoenixJSRoutedNonObjectReplies(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"game": {Pushes: namespace.PushesRequest}}
	})
	bin := []byte{0, 1, 2, 0xff}
	if _, err := f.nc.Subscribe("fabric_in.game.>", func(m *nats.Msg) {
		switch m.Header.Get("Fabric-Event") {
		case "bytes":
			m.Respond(bin)
		case "string":
			m.Respond([]byte(`"hello"`))
		}
	}); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()
	for _, longpoll := range []bool{false, true} {
		p := phxnode.Start(t)
		if err := p.Connect(f.socketURL(), nil, map[string]any{"longpoll": longpoll}); err != nil {
			t.Fatal(err)
		}
		if s, _ := p.Join("game:1", nil); s != "ok" {
			t.Fatal(s)
		}
		r := p.PushOpts("game:1", "bytes", nil, nil)
		if longpoll {
			var resp struct{ Base64 []byte }
			if r.Status != "ok" || r.Binary || json.Unmarshal(r.Response, &resp) != nil || !bytes.Equal(resp.Base64, bin) {
				t.Fatalf("LongPoll bytes reply: %+v %s", r, r.Response)
			}
		} else {
			var b64 []byte
			if r.Status != "ok" || !r.Binary || json.Unmarshal(r.Response, &b64) != nil || !bytes.Equal(b64, bin) {
				t.Fatalf("binary reply: %+v %s", r, r.Response)
			}
		}
		if s, resp := p.Push("game:1", "string", nil); s != "error" || string(resp) != `{"reason":"invalid_reply"}` {
			t.Fatalf("longpoll=%v JSON string reply: %s %s", longpoll, s, resp)
		}
	}
}

// Offsets are decimal strings everywhere the server emits one (a stream
// sequence is a uint64; JavaScript numbers lose precision past 2^53);
// clients may send a number or a string.
func TestOffsetsAreDecimalStrings(t *testing.T) {
	f := startFabric(t, nil)
	c := f.dial(phoenix.V2, phxclient.Options{})
	jr, _ := c.Join("room:strings", nil)
	s, resp, err := c.WaitReply(jr, wait)
	var head struct {
		Epoch  string
		Offset json.RawMessage
	}
	if s != "ok" || err != nil || json.Unmarshal(resp, &head) != nil || head.Offset[0] != '"' {
		t.Fatalf("join reply %s %s %v: offset must be a string", s, resp, err)
	}
	ref := c.NextRef()
	c.Send(phoenix.R(jr), phoenix.R(ref), "room:strings", "shout", map[string]int{"n": 1})
	s, resp, err = c.WaitReply(ref, wait)
	var pushed struct{ Offset string }
	if s != "ok" || err != nil || json.Unmarshal(resp, &pushed) != nil || pushed.Offset == "" {
		t.Fatalf("push reply %s %s %v: offset must be a string", s, resp, err)
	}
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "shout" })
	if err != nil || m.Ref.S != pushed.Offset {
		t.Fatalf("delivered with ref %v, acked offset %s: %v", m.Ref, pushed.Offset, err)
	}
	var headOffset string
	json.Unmarshal(head.Offset, &headOffset)
	n, _ := strconv.ParseUint(headOffset, 10, 64)
	for _, off := range []any{headOffset, n} {
		r := f.dial(phoenix.V2, phxclient.Options{})
		if s, resp, err := r.JoinWait("room:strings", map[string]any{"epoch": head.Epoch, "offset": off}, wait); s != "ok" || err != nil ||
			!strings.Contains(string(resp), `"recovered":true`) || !strings.Contains(string(resp), `"offset":"`) {
			t.Fatalf("resume from %#v: %s %s %v", off, s, resp, err)
		}
		if m, err := r.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "shout" }); err != nil || m.Ref.S != pushed.Offset {
			t.Fatalf("resume from %#v replayed %v: %v", off, m.Ref, err)
		}
	}
}
