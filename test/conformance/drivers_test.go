package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// ---------------------------------------------------------------------------
// JS clients: one Node process per client, driven through internal/testkit/phxnode
// (puppet.mjs for phoenix, community.mjs for phoenix-channels and
// phoenix-socket, which speak the same command protocol).

type puppetDriver struct {
	p *phxnode.Puppet
}

func startPhoenix(longpoll, logger bool) func(*testing.T, *env, *client) driver {
	return func(t *testing.T, e *env, c *client) driver {
		p := phxnode.Start(t)
		opts := map[string]any{"longpoll": longpoll, "debug": logger, "reconnectAfterMs": 200, "rejoinAfterMs": 200}
		if err := p.Connect(e.socketURL(), map[string]any{"token": e.token(t, c.name)}, opts); err != nil {
			t.Fatalf("connect: %v", err)
		}
		return &puppetDriver{p: p}
	}
}

func startCommunity(pkg string) func(*testing.T, *env, *client) driver {
	return func(t *testing.T, e *env, c *client) driver {
		p := phxnode.StartScript(t, "community.mjs", []string{pkg}, pkg, "ws")
		// A shorter heartbeat so the heartbeat scenario sees the client's own
		// timer at work in seconds, not minutes; not much shorter, since
		// these clients drop the connection when a reply misses the next
		// tick (on a loaded machine, a few hundred ms is not enough). The
		// logger is set: these clients read payload.status of every message
		// whether or not one is, and log what they receive.
		opts := map[string]any{"heartbeatIntervalMs": 2000, "debug": true}
		if err := p.Connect(e.socketURL(), map[string]any{"token": e.token(t, c.name)}, opts); err != nil {
			t.Fatalf("connect: %v", err)
		}
		return &puppetDriver{p: p}
	}
}

func (d *puppetDriver) do(t *testing.T, cmd map[string]any, v any) {
	t.Helper()
	raw, err := d.p.DoRaw(cmd)
	if err != nil {
		t.Fatalf("%v\nclient stderr (tail):\n%s", err, tail(d.p.Stderr()))
	}
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%v: bad response %s: %v", cmd["cmd"], raw, err)
		}
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}

func (d *puppetDriver) mustNext(t *testing.T, what string, match func(phxnode.Event) bool) phxnode.Event {
	t.Helper()
	ev, ok := d.p.Next(wait, match)
	if !ok {
		t.Fatalf("no %s within %v; buffered events: %v\nclient stderr (tail):\n%s", what, wait, d.p.Buffered(), tail(d.p.Stderr()))
	}
	return ev
}

func (d *puppetDriver) join(t *testing.T, topic string, params map[string]any, o joinOpts) (string, json.RawMessage) {
	t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	var r phxnode.JoinResult
	d.do(t, map[string]any{"cmd": "join", "topic": topic, "params": params, "presence": o.presence, "leaveOnError": o.refused}, &r)
	return r.Status, r.Response
}

func (d *puppetDriver) push(t *testing.T, topic, event string, payload map[string]any) (string, json.RawMessage) {
	t.Helper()
	var r phxnode.PushResult
	d.do(t, map[string]any{"cmd": "push", "topic": topic, "event": event, "payload": payload}, &r)
	return r.Status, r.Response
}

func (d *puppetDriver) leave(t *testing.T, topic string) {
	t.Helper()
	d.do(t, map[string]any{"cmd": "leave", "topic": topic}, nil)
	d.mustNext(t, "chan_close after leave", phxnode.OnTopic("chan_close", topic))
}

func (d *puppetDriver) next(t *testing.T, topic, event string) msg {
	t.Helper()
	ev := d.mustNext(t, topic+" "+event, phxnode.IsMsg(topic, event))
	if !ev.Binary {
		return msg{Payload: ev.Payload, Offset: ev.RefString()}
	}
	// A binary broadcast has no ref slot: the app learns its offset from
	// the fabric:offset message that follows (what the resume helper reads).
	o := d.mustNext(t, "fabric:offset after "+event, phxnode.IsMsg(topic, "fabric:offset"))
	var p struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(o.Payload, &p); err != nil || p.Offset != o.RefString() {
		t.Fatalf("fabric:offset message %s: want {\"offset\": \"<the ref>\"}", o)
	}
	return msg{Bytes: ev.Bytes(), Offset: p.Offset}
}

func (d *puppetDriver) count(topic, event string) int {
	return len(d.p.Drain(phxnode.IsMsg(topic, event)))
}

func (d *puppetDriver) closedByServer(t *testing.T, topic string) {
	t.Helper()
	d.mustNext(t, "the first channel's close", phxnode.OnTopic("chan_close", topic))
}

func (d *puppetDriver) presence(t *testing.T, topic string, ok func(map[string]bool) bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	var last []phxnode.Presence
	for time.Now().Before(deadline) {
		ev, got := d.p.Next(time.Until(deadline), phxnode.OnTopic("presence_sync", topic))
		if !got {
			break
		}
		last = ev.PresenceList()
		keys := map[string]bool{}
		for _, p := range last {
			keys[p.Key] = true
		}
		if ok(keys) {
			return
		}
	}
	t.Fatalf("presence list on %s never matched; last %+v", topic, last)
}

func (d *puppetDriver) heartbeat(t *testing.T) {
	t.Helper()
	for i := 0; i < 2; i++ {
		d.do(t, map[string]any{"cmd": "ping"}, nil)
	}
	var st phxnode.State
	d.do(t, map[string]any{"cmd": "state"}, &st)
	if !st.Connected {
		t.Fatalf("socket not connected after the heartbeats: %+v", st)
	}
}

// ---------------------------------------------------------------------------
// raw-numeric: the wire probe, every ref and join_ref a JSON number (the
// first one 0, as Python's phxsocket sends), and every reply checked to
// echo them as numbers. v1 frames have no join_ref slot on the way out, so
// over v1 only the ref is checked.

type rawDriver struct {
	c        *phxclient.Client
	v        phoenix.Version
	ref      int
	joinRefs map[string][]int // topic -> join refs, latest last
	keys     map[string]map[string]bool
}

func dialRaw(t *testing.T, e *env, v phoenix.Version, sub string) *rawDriver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	vsn := "2.0.0"
	if v == phoenix.V1 {
		vsn = "1.0.0"
	}
	u := "ws://" + e.app.HTTPAddr() + "/socket/websocket?vsn=" + vsn + "&token=" + url.QueryEscape(e.token(t, sub))
	c, err := phxclient.Dial(ctx, u, v, phxclient.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawDriver{c: c, v: v, ref: -1, joinRefs: map[string][]int{}, keys: map[string]map[string]bool{}}
}

func startRaw(v phoenix.Version) func(*testing.T, *env, *client) driver {
	return func(t *testing.T, e *env, c *client) driver { return dialRaw(t, e, v, c.name) }
}

// joinRefIs checks a frame's join_ref slot (v2 only; v1 frames have none).
func (d *rawDriver) joinRefIs(r phoenix.Ref, n int) bool { return d.v == phoenix.V1 || isNum(r, n) }

func num(n int) phoenix.Ref { return phoenix.RawRef(strconv.Itoa(n)) }

func isNum(r phoenix.Ref, n int) bool { return r.Valid && r.Raw && r.S == strconv.Itoa(n) }

func (d *rawDriver) send(t *testing.T, joinRef phoenix.Ref, topic, event string, payload any) int {
	t.Helper()
	d.ref++
	if err := d.c.Send(joinRef, num(d.ref), topic, event, payload); err != nil {
		t.Fatalf("send %s: %v", event, err)
	}
	return d.ref
}

func (d *rawDriver) match(t *testing.T, what string, f func(phxclient.Msg) bool) phxclient.Msg {
	t.Helper()
	m, err := d.c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close || f(m) })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	if m.Close {
		t.Fatalf("connection closed (%d) while waiting for %s", m.CloseCode, what)
	}
	return m
}

// reply waits for the reply to ref and checks both refs came back as the
// numbers sent (joinRef < 0: a null join_ref).
func (d *rawDriver) reply(t *testing.T, joinRef, ref int) (string, json.RawMessage) {
	t.Helper()
	m := d.match(t, "reply "+strconv.Itoa(ref), func(m phxclient.Msg) bool {
		return m.Event == phoenix.EventReply && m.Ref.Valid && m.Ref.S == strconv.Itoa(ref)
	})
	if !isNum(m.Ref, ref) || (joinRef >= 0 && !d.joinRefIs(m.JoinRef, joinRef)) || (joinRef < 0 && m.JoinRef.Valid) {
		t.Fatalf("reply %s: refs not echoed as the numbers sent (join_ref %d, ref %d)", m.Raw, joinRef, ref)
	}
	var r struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(m.Payload, &r); err != nil {
		t.Fatalf("reply %s: %v", m.Raw, err)
	}
	return r.Status, r.Response
}

func (d *rawDriver) current(topic string) int {
	if rs := d.joinRefs[topic]; len(rs) > 0 {
		return rs[len(rs)-1]
	}
	return 1 << 30 // never sent
}

func (d *rawDriver) join(t *testing.T, topic string, params map[string]any, o joinOpts) (string, json.RawMessage) {
	t.Helper()
	if params == nil {
		params = map[string]any{}
	}
	jr := d.ref + 1
	if ref := d.send(t, num(jr), topic, phoenix.EventJoin, params); ref != jr {
		t.Fatalf("join ref %d, expected %d", ref, jr)
	}
	st, resp := d.reply(t, jr, jr)
	if st == "ok" {
		d.joinRefs[topic] = append(d.joinRefs[topic], jr)
	}
	return st, resp
}

func (d *rawDriver) push(t *testing.T, topic, event string, payload map[string]any) (string, json.RawMessage) {
	t.Helper()
	jr := d.current(topic)
	ref := d.send(t, num(jr), topic, event, payload)
	return d.reply(t, jr, ref)
}

func (d *rawDriver) pushUnjoined(t *testing.T, topic string) (string, json.RawMessage) {
	t.Helper()
	ref := d.send(t, num(77), topic, "shout", map[string]any{})
	// Phoenix answers an unmatched topic with a null join_ref.
	return d.reply(t, -1, ref)
}

func (d *rawDriver) leave(t *testing.T, topic string) {
	t.Helper()
	jr := d.current(topic)
	ref := d.send(t, num(jr), topic, phoenix.EventLeave, map[string]any{})
	st, resp := d.reply(t, jr, ref)
	mustStatus(t, "leave", st, resp, "ok")
	m := d.match(t, "phx_close after the leave", func(m phxclient.Msg) bool {
		return m.Topic == topic && m.Event == phoenix.EventClose
	})
	if !d.joinRefIs(m.JoinRef, jr) {
		t.Fatalf("phx_close %s: join_ref not the number %d", m.Raw, jr)
	}
	delete(d.joinRefs, topic)
}

func (d *rawDriver) next(t *testing.T, topic, event string) msg {
	t.Helper()
	m := d.match(t, topic+" "+event, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == event })
	if !m.Binary {
		if m.Ref.Raw {
			t.Fatalf("%s: the offset in the ref slot is not a string", m.Raw)
		}
		return msg{Payload: m.Payload, Offset: m.Ref.S}
	}
	// A binary broadcast has no ref slot: its offset follows in a
	// fabric:offset frame whose payload is an object, never null.
	o := d.match(t, "fabric:offset after "+event, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == "fabric:offset" })
	var p struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(o.Payload, &p); err != nil || p.Offset == "" || p.Offset != o.Ref.S {
		t.Fatalf("fabric:offset frame %s: want {\"offset\": \"<the ref slot>\"}", o.Raw)
	}
	return msg{Bytes: m.Bytes, Offset: p.Offset}
}

func (d *rawDriver) count(topic, event string) int {
	n := 0
	for {
		if _, err := d.c.NextMatch(0, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == event }); err != nil {
			return n
		}
		n++
	}
}

func (d *rawDriver) closedByServer(t *testing.T, topic string) {
	t.Helper()
	rs := d.joinRefs[topic]
	if len(rs) < 2 {
		t.Fatalf("closedByServer: %d joins of %s", len(rs), topic)
	}
	old := rs[len(rs)-2]
	m := d.match(t, "phx_close of the first join", func(m phxclient.Msg) bool {
		return m.Topic == topic && m.Event == phoenix.EventClose
	})
	if !d.joinRefIs(m.JoinRef, old) || !isNum(m.Ref, old) {
		t.Fatalf("phx_close %s: want join_ref and ref the number %d of the replaced join", m.Raw, old)
	}
}

func (d *rawDriver) presence(t *testing.T, topic string, ok func(map[string]bool) bool) {
	t.Helper()
	keys := d.keys[topic]
	if keys == nil {
		keys = map[string]bool{}
		d.keys[topic] = keys
	}
	deadline := time.Now().Add(wait)
	for !ok(keys) {
		m, err := d.c.NextMatch(time.Until(deadline), func(m phxclient.Msg) bool {
			return m.Close || m.Topic == topic && (m.Event == "presence_state" || m.Event == "presence_diff")
		})
		if err != nil || m.Close {
			t.Fatalf("presence on %s never matched (%v); keys %v", topic, err, keys)
		}
		if m.Event == "presence_state" {
			// a push to this channel: its join_ref, echoed as a number
			if !d.joinRefIs(m.JoinRef, d.current(topic)) {
				t.Fatalf("presence_state %s: join_ref not the number %d", m.Raw, d.current(topic))
			}
			var st map[string]json.RawMessage
			if err := json.Unmarshal(m.Payload, &st); err != nil {
				t.Fatalf("presence_state %s: %v", m.Raw, err)
			}
			clear(keys)
			for k := range st {
				keys[k] = true
			}
			continue
		}
		var diff struct{ Joins, Leaves map[string]json.RawMessage }
		if err := json.Unmarshal(m.Payload, &diff); err != nil {
			t.Fatalf("presence_diff %s: %v", m.Raw, err)
		}
		for k := range diff.Leaves {
			delete(keys, k)
		}
		for k := range diff.Joins {
			keys[k] = true
		}
	}
}

func (d *rawDriver) heartbeat(t *testing.T) {
	t.Helper()
	for i := 0; i < 2; i++ {
		ref := d.send(t, phoenix.Null, phoenix.TopicPhoenix, "heartbeat", map[string]any{})
		st, resp := d.reply(t, -1, ref)
		mustStatus(t, "heartbeat", st, resp, "ok")
	}
}

// ---------------------------------------------------------------------------
// go: clients/go (package phx).

type goDriver struct {
	s  *phx.Socket
	hb *heartbeatCounter

	mu       sync.Mutex
	chans    map[string]*phx.Channel
	pres     map[string]*phx.Presence
	inbox    []phx.Message
	arrived  chan struct{}
	resumes  map[string]phx.Resume
	errCount atomic.Int64
}

// heartbeatCounter counts the server's heartbeat replies on the wire (the
// client answers them silently; a reply missing for a whole interval would
// make it reconnect).
type heartbeatCounter struct {
	n    atomic.Int64
	mu   sync.Mutex
	tail []byte
}

var hbReply = []byte(`"phoenix","phx_reply",{"status":"ok"`)

func (h *heartbeatCounter) saw(p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	buf := append(h.tail, p...)
	h.n.Add(int64(bytes.Count(buf, hbReply)))
	// keep less than one pattern's worth, so a match split across reads
	// is counted once
	keep := min(len(buf), len(hbReply)-1)
	h.tail = append(h.tail[:0], buf[len(buf)-keep:]...)
}

type countingConn struct {
	net.Conn
	h *heartbeatCounter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.h.saw(p[:n])
	return n, err
}

func startGo(t *testing.T, e *env, c *client) driver {
	d := &goDriver{
		hb:      &heartbeatCounter{},
		chans:   map[string]*phx.Channel{},
		pres:    map[string]*phx.Presence{},
		arrived: make(chan struct{}, 1),
		resumes: map[string]phx.Resume{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := phx.Dial(ctx, e.socketURL(), phx.Options{
		Params:            url.Values{"token": {e.token(t, c.name)}},
		HeartbeatInterval: time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, h: d.hb}, nil
		},
		OnDisconnect: func(err error) { d.errCount.Add(1) },
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	d.s = s
	return d
}

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func (d *goDriver) add(m phx.Message) {
	d.mu.Lock()
	d.inbox = append(d.inbox, m)
	d.mu.Unlock()
	select {
	case d.arrived <- struct{}{}:
	default:
	}
}

func replyOf(t *testing.T, what string, err error) (string, json.RawMessage) {
	t.Helper()
	var re *phx.ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("%s: %v", what, err)
	}
	return re.Reply.Status, re.Reply.Response
}

func (d *goDriver) join(t *testing.T, topic string, params map[string]any, o joinOpts) (string, json.RawMessage) {
	t.Helper()
	opts := []phx.ChannelOption{phx.OnMessage(d.add)}
	if o.presence {
		p := phx.NewPresence()
		d.mu.Lock()
		d.pres[topic] = p
		d.mu.Unlock()
		opts = append(opts, phx.WithPresence(p))
	}
	// The resume contract is the client's own: a saved position is given
	// with ResumeFrom, not as params.
	ep, resuming := params["epoch"].(string)
	if resuming {
		off, err := strconv.ParseUint(params["offset"].(string), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, phx.ResumeFrom(phx.Position{Epoch: ep, Offset: off}), phx.OnResume(func(r phx.Resume) {
			d.mu.Lock()
			d.resumes[topic] = r
			d.mu.Unlock()
		}))
		params = nil
	}
	var p any // a nil map would be sent as null
	if params != nil {
		p = params
	}
	ch, err := d.s.Join(ctxWait(t), topic, p, opts...)
	if err != nil {
		return replyOf(t, "join "+topic, err)
	}
	if resuming {
		// The client reports the outcome through OnResume too.
		var r phx.Resume
		eventually(t, "OnResume", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			var ok bool
			r, ok = d.resumes[topic]
			return ok
		})
		var resp struct{ Recovered bool }
		if json.Unmarshal(ch.Response(), &resp) != nil || r.Recovered != resp.Recovered {
			t.Fatalf("OnResume reported %+v for the join reply %s", r, ch.Response())
		}
	}
	d.mu.Lock()
	d.chans[topic] = ch
	d.mu.Unlock()
	return "ok", ch.Response()
}

func (d *goDriver) channel(t *testing.T, topic string) *phx.Channel {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := d.chans[topic]
	if ch == nil {
		t.Fatalf("no channel for %s", topic)
	}
	return ch
}

func (d *goDriver) push(t *testing.T, topic, event string, payload map[string]any) (string, json.RawMessage) {
	t.Helper()
	r, err := d.channel(t, topic).Push(ctxWait(t), event, payload)
	if err != nil {
		return replyOf(t, "push "+event, err)
	}
	return r.Status, r.Response
}

func (d *goDriver) leave(t *testing.T, topic string) {
	t.Helper()
	if err := d.channel(t, topic).Leave(ctxWait(t)); err != nil {
		t.Fatalf("leave %s: %v", topic, err)
	}
	d.mu.Lock()
	delete(d.chans, topic)
	d.mu.Unlock()
}

func (d *goDriver) take(topic, event string) (phx.Message, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, m := range d.inbox {
		if m.Topic == topic && m.Event == event {
			d.inbox = append(d.inbox[:i], d.inbox[i+1:]...)
			return m, true
		}
	}
	return phx.Message{}, false
}

func (d *goDriver) next(t *testing.T, topic, event string) msg {
	t.Helper()
	deadline := time.After(wait)
	for {
		if m, ok := d.take(topic, event); ok {
			out := msg{Payload: m.Payload, Bytes: m.Binary}
			if m.Offset != 0 {
				out.Offset = strconv.FormatUint(m.Offset, 10)
			}
			return out
		}
		select {
		case <-d.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s on %s within %v", event, topic, wait)
		}
	}
}

func (d *goDriver) count(topic, event string) int {
	n := 0
	for {
		if _, ok := d.take(topic, event); !ok {
			return n
		}
		n++
	}
}

func (d *goDriver) closedByServer(t *testing.T, topic string) {
	t.Fatal("duplicate join is n/a for the Go client")
}

func (d *goDriver) presence(t *testing.T, topic string, ok func(map[string]bool) bool) {
	t.Helper()
	d.mu.Lock()
	p := d.pres[topic]
	d.mu.Unlock()
	var keys map[string]bool
	eventually(t, "the presence list on "+topic, func() bool {
		keys = map[string]bool{}
		for _, e := range p.List() {
			keys[e.Key] = true
		}
		return ok(keys)
	})
}

func (d *goDriver) heartbeat(t *testing.T) {
	t.Helper()
	before, drops := d.hb.n.Load(), d.errCount.Load()
	eventually(t, "two heartbeat replies", func() bool { return d.hb.n.Load() >= before+2 })
	if n := d.errCount.Load(); n != drops || !d.s.Connected() {
		t.Fatalf("the connection dropped %d times during the heartbeats", n-drops)
	}
}
