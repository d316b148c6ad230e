package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// joinService answers fabric_join requests on subject with decide, decoding
// and encoding the documented schema (the proto3 JSON mapping), as a Go
// service would with the generated code. It records every request.
type joinService struct {
	mu   sync.Mutex
	seen []*fabricv1.JoinRequest
}

func (js *joinService) serve(t *testing.T, nc *nats.Conn, subject string, decide func(*fabricv1.JoinRequest) *fabricv1.JoinReply) {
	t.Helper()
	_, err := nc.QueueSubscribe(subject, "joins", func(m *nats.Msg) {
		req := new(fabricv1.JoinRequest)
		if err := protojson.Unmarshal(m.Data, req); err != nil {
			t.Errorf("join request %s does not follow the schema: %v", m.Data, err)
			return
		}
		js.mu.Lock()
		js.seen = append(js.seen, req)
		js.mu.Unlock()
		if rep := decide(req); rep != nil {
			b, _ := protojson.Marshal(rep)
			_ = m.Respond(b)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (js *joinService) last(topic string) *fabricv1.JoinRequest {
	js.mu.Lock()
	defer js.mu.Unlock()
	for i := len(js.seen) - 1; i >= 0; i-- {
		if js.seen[i].Topic == topic {
			return js.seen[i]
		}
	}
	return nil
}

func object(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sameJSON(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if json.Unmarshal(got, &a) != nil || json.Unmarshal([]byte(want), &b) != nil {
		return false
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Phoenix's join/3 over NATS, with the real phoenix client: a Go service
// admits joins with a payload the client receives and assigns its push
// handler sees, refuses others with its reason; no service, a slow one,
// and `join_scope: all` for joins the token does not cover.
func TestJoinHook(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{
			"game": {Pushes: namespace.PushesRequest, Joins: namespace.JoinsRequest},
			"slow": {Joins: namespace.JoinsRequest, JoinTimeout: 300 * time.Millisecond},
			"none": {Joins: namespace.JoinsRequest},
			"open": {Joins: namespace.JoinsRequest, JoinScope: "all"},
		}
	})
	events := make(chan *nats.Msg, 100)
	if _, err := f.nc.ChanSubscribe("fabric_events.join.game.>", events); err != nil {
		t.Fatal(err)
	}
	var js joinService
	js.serve(t, f.nc, "fabric_join.game.>", func(r *fabricv1.JoinRequest) *fabricv1.JoinReply {
		if r.Params.GetFields()["color"].GetStringValue() == "blue" {
			return &fabricv1.JoinReply{Reason: "banned color"}
		}
		return &fabricv1.JoinReply{Ok: true,
			Response: object(t, map[string]any{"state": "running", "topic": r.Topic}),
			Assigns:  object(t, map[string]any{"team": "red", "user": r.SubjectId})}
	})
	js.serve(t, f.nc, "fabric_join.slow.>", func(*fabricv1.JoinRequest) *fabricv1.JoinReply { return nil })
	js.serve(t, f.nc, "fabric_join.open.>", func(r *fabricv1.JoinRequest) *fabricv1.JoinReply {
		if r.Params.GetFields()["invite"].GetStringValue() != "yes" {
			return &fabricv1.JoinReply{Reason: "no invite"}
		}
		return &fabricv1.JoinReply{Ok: true}
	})
	if _, err := f.nc.Subscribe("fabric_in.game.>", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"assigns":` + m.Header.Get("Fabric-Assigns") + `}`))
	}); err != nil {
		t.Fatal(err)
	}

	tok := mint(t, auth.MintClaims{Subject: "alice", Channels: []string{"game:*", "slow:*", "none:*"}, Publish: []string{"game:*"}})
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), map[string]any{"token": tok}, nil); err != nil {
		t.Fatal(err)
	}
	status, resp := p.Join("game:1", map[string]any{"color": "red"})
	if status != "ok" || !sameJSON(t, resp, `{"state":"running","topic":"game:1"}`) {
		t.Fatalf("hooked join: %s %s", status, resp)
	}
	req := js.last("game:1")
	if req == nil || req.SubjectId != "alice" || req.ConnectionId == "" || !req.Granted ||
		req.Params.GetFields()["color"].GetStringValue() != "red" || req.Claims.GetFields()["sub"].GetStringValue() != "alice" {
		t.Fatalf("join request: %v", req)
	}
	if status, resp = p.Push("game:1", "move", nil); status != "ok" || !sameJSON(t, resp, `{"assigns":{"team":"red","user":"alice"}}`) {
		t.Fatalf("push handler's view of the assigns: %s %s", status, resp)
	}
	select {
	case m := <-events:
		var ev struct{ Assigns map[string]string }
		if json.Unmarshal(m.Data, &ev) != nil || ev.Assigns["team"] != "red" {
			t.Fatalf("join event without the assigns: %s", m.Data)
		}
	case <-time.After(wait):
		t.Fatal("no join event")
	}

	refused := func(topic string, params map[string]any, reason string) {
		t.Helper()
		r := p.JoinOpts(topic, params, map[string]any{"leaveOnError": true})
		if r.Status != "error" || !sameJSON(t, r.Response, `{"reason":"`+reason+`"}`) {
			t.Fatalf("join %s: %s %s, want error %s", topic, r.Status, r.Response, reason)
		}
	}
	refused("game:2", map[string]any{"color": "blue"}, "banned color")
	start := time.Now()
	refused("slow:1", nil, "timeout")
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("timeout took %v", el)
	}
	refused("none:1", nil, "no_handler")
	// join_scope: all: the token does not cover open:*, the service decides.
	if status, _ := p.Join("open:1", map[string]any{"invite": "yes"}); status != "ok" {
		t.Fatalf("join admitted by the service alone: %s", status)
	}
	if r := js.last("open:1"); r == nil || r.Granted {
		t.Fatalf("open:1 request: %v", r)
	}
	refused("open:2", nil, "no invite")
	// The connection survived every refusal.
	if status, _ = p.Push("game:1", "move", nil); status != "ok" {
		t.Fatalf("push after refusals: %s", status)
	}
	st, ok := f.Gateway().HookStats()
	j := st.Outcomes["join"]
	if !ok || j["ok"] < 2 || j["refused"] < 2 || j["timeout"] != 1 || j["no_handler"] != 1 || st.Latency["join"].Count() < 4 {
		t.Fatalf("hook stats: %+v", st)
	}
	if m := scrape(t, f); !strings.Contains(m, `fabric_hook_requests_total{hook="join",outcome="timeout"} 1`) ||
		!strings.Contains(m, `fabric_hook_latency_seconds_bucket{hook="join"`) {
		t.Fatalf("metrics lack the hook series")
	}
}

func scrape(t *testing.T, f *fabric) string {
	t.Helper()
	r, err := http.Get("http://" + f.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// Resumes go through the join hook: a player the service kicked while
// disconnected is refused, another resumes from its offset and gets what
// it missed (the hook's ok does not restart the history).
func TestJoinHookResume(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"match": {History: true, Joins: namespace.JoinsRequest}}
	})
	var mu sync.Mutex
	kicked := map[string]bool{}
	var js joinService
	js.serve(t, f.nc, "fabric_join.match.>", func(r *fabricv1.JoinRequest) *fabricv1.JoinReply {
		mu.Lock()
		defer mu.Unlock()
		if kicked[r.SubjectId] {
			return &fabricv1.JoinReply{Reason: "kicked"}
		}
		return &fabricv1.JoinReply{Ok: true, Response: object(t, map[string]any{"round": 3})}
	})
	connect := func(sub string) *phxnode.Puppet {
		p := phxnode.Start(t)
		tok := mint(t, auth.MintClaims{Subject: sub, Channels: []string{"match:*"}})
		if err := p.Connect(f.socketURL(), map[string]any{"token": tok}, nil); err != nil {
			t.Fatal(err)
		}
		return p
	}
	type pos struct {
		Round     int    `json:"round"`
		Epoch     string `json:"epoch"`
		Offset    string `json:"offset"`
		Recovered *bool  `json:"recovered"`
	}
	positions := map[string]pos{}
	for _, sub := range []string{"alice", "bob"} {
		p := connect(sub)
		status, resp := p.Join("match:1", nil)
		var ps pos
		if status != "ok" || json.Unmarshal(resp, &ps) != nil || ps.Round != 3 || ps.Epoch == "" || ps.Offset == "" {
			t.Fatalf("%s: first join %s %s", sub, status, resp)
		}
		positions[sub] = ps
		p.Disconnect(1000, "bye")
	}
	for i := range 3 {
		f.publish("fabric.match.1", "goal", []byte(`{"n":`+string(rune('0'+i))+`}`))
	}
	mu.Lock()
	kicked["alice"] = true
	mu.Unlock()

	a := connect("alice")
	ap := positions["alice"]
	r := a.JoinOpts("match:1", map[string]any{"epoch": ap.Epoch, "offset": ap.Offset}, map[string]any{"leaveOnError": true})
	if r.Status != "error" || !sameJSON(t, r.Response, `{"reason":"kicked"}`) {
		t.Fatalf("kicked player's resume: %s %s", r.Status, r.Response)
	}
	b := connect("bob")
	bp := positions["bob"]
	status, resp := b.Join("match:1", map[string]any{"epoch": bp.Epoch, "offset": bp.Offset})
	var got pos
	if status != "ok" || json.Unmarshal(resp, &got) != nil || got.Recovered == nil || !*got.Recovered || got.Round != 3 {
		t.Fatalf("bob's resume: %s %s", status, resp)
	}
	if req := js.last("match:1"); req.GetResume() == nil || req.GetResume().GetEpoch() != bp.Epoch ||
		strconv.FormatUint(req.GetResume().GetOffset(), 10) != bp.Offset {
		t.Fatalf("the resume request does not carry the position: %v", req)
	}
	for i := range 3 {
		e := b.MustNext(wait, "missed message", phxnode.IsMsg("match:1", "goal"))
		if !strings.Contains(string(e.Payload), string(rune('0'+i))) {
			t.Fatalf("missed message %d: %s", i, e.Payload)
		}
	}
}

// Phoenix's connect/3 over NATS: the service refuses a user before the
// upgrade (403 with its reason; LongPoll's {"status":403}), or admits it with assigns
// that reach the join hook and push handlers, and with extra grants.
func TestConnectHook(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) {
		c.ConnectHook = true
		c.ConnectHookTimeout = time.Second
		c.Namespaces = map[string]namespace.Namespace{"game": {Pushes: namespace.PushesRequest, Joins: namespace.JoinsRequest}}
	})
	seen := make(chan *fabricv1.ConnectRequest, 10)
	sub, err := f.nc.Subscribe("fabric_connect", func(m *nats.Msg) {
		req := new(fabricv1.ConnectRequest)
		if err := protojson.Unmarshal(m.Data, req); err != nil {
			t.Errorf("connect request %s does not follow the schema: %v", m.Data, err)
			return
		}
		seen <- req
		rep := &fabricv1.ConnectReply{Ok: true, Assigns: object(t, map[string]any{"tier": "gold"}), Channels: []string{"vip:{sub}"}}
		if req.SubjectId == "mallory" {
			rep = &fabricv1.ConnectReply{Reason: "banned"}
		}
		b, _ := protojson.Marshal(rep)
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	var js joinService
	js.serve(t, f.nc, "fabric_join.game.>", func(*fabricv1.JoinRequest) *fabricv1.JoinReply {
		return &fabricv1.JoinReply{Ok: true, Assigns: object(t, map[string]any{"team": "blue"})}
	})
	if _, err := f.nc.Subscribe("fabric_in.game.>", func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"assigns":` + m.Header.Get("Fabric-Assigns") + `}`))
	}); err != nil {
		t.Fatal(err)
	}

	mallory := mint(t, auth.MintClaims{Subject: "mallory", Channels: []string{"game:*"}})
	r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0&room=7&token="+mallory, nil)
	if r.StatusCode != 403 || !strings.Contains(bodyOf(r), `"reason":"banned"`) {
		t.Fatalf("refused upgrade: %d %s", r.StatusCode, bodyOf(r))
	}
	if req := <-seen; req.SubjectId != "mallory" || req.Transport != "websocket" || req.Claims.GetFields()["sub"].GetStringValue() != "mallory" ||
		req.Params.GetFields()["room"].GetStringValue() != "7" || req.Params.GetFields()["token"] != nil {
		t.Fatalf("connect request: %v", req)
	}
	lp, err := http.Get("http://" + f.HTTPAddr() + "/socket/longpoll?vsn=2.0.0&token=" + mallory)
	if err != nil {
		t.Fatal(err)
	}
	var lpBody struct{ Status int }
	err = json.NewDecoder(lp.Body).Decode(&lpBody)
	lp.Body.Close()
	if err != nil || lpBody.Status != 403 {
		t.Fatalf("refused LongPoll open: %d %+v %v", lp.StatusCode, lpBody, err)
	}
	if req := <-seen; req.Transport != "longpoll" {
		t.Fatalf("LongPoll connect request: %v", req)
	}

	p := phxnode.Start(t)
	tok := mint(t, auth.MintClaims{Subject: "alice", Channels: []string{"game:*"}, Publish: []string{"game:*"}})
	if err := p.Connect(f.socketURL(), map[string]any{"token": tok}, nil); err != nil {
		t.Fatal(err)
	}
	// vip:alice is not in the token: the connect hook granted it.
	if status, resp := p.Join("vip:alice", nil); status != "ok" {
		t.Fatalf("join granted by the connect hook: %s %s", status, resp)
	}
	if status, _ := p.Join("game:1", nil); status != "ok" {
		t.Fatal(status)
	}
	if req := js.last("game:1"); req.GetAssigns().GetFields()["tier"].GetStringValue() != "gold" {
		t.Fatalf("join request without the connection's assigns: %v", req)
	}
	if status, resp := p.Push("game:1", "move", nil); status != "ok" || !sameJSON(t, resp, `{"assigns":{"tier":"gold","team":"blue"}}`) {
		t.Fatalf("push with merged assigns: %s %s", status, resp)
	}

	// No service: fail closed.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()
	if r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0&token="+tok, nil); r.StatusCode != 403 || !strings.Contains(bodyOf(r), `"reason":"no_handler"`) {
		t.Fatalf("no connect service: %d %s", r.StatusCode, bodyOf(r))
	}
}

// A leave or a disconnect while the service decides cancels the join: no
// reply comes for it, and the service's late ok attaches nothing.
func TestJoinHookCanceled(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"game": {Joins: namespace.JoinsRequest}}
	})
	asked := make(chan struct{}, 10)
	if _, err := f.nc.Subscribe("fabric_join.game.>", func(m *nats.Msg) {
		asked <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		_ = m.Respond([]byte(`{"ok":true}`))
	}); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()
	c := f.dial(phoenix.V2, phxclient.Options{})
	ref, err := c.Join("game:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-asked
	leaveRef := c.NextRef()
	if err := c.Send(phoenix.R(ref), phoenix.R(leaveRef), "game:1", phoenix.EventLeave, map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if status, _, err := c.WaitReply(leaveRef, wait); err != nil || status != "ok" {
		t.Fatalf("leave: %s %v", status, err)
	}
	if status, resp, err := c.WaitReply(ref, time.Second); err == nil {
		t.Fatalf("a canceled join was answered: %s %s", status, resp)
	}
	d := f.dial(phoenix.V2, phxclient.Options{})
	if _, err := d.Join("game:1", nil); err != nil {
		t.Fatal(err)
	}
	<-asked
	d.Close()
	time.Sleep(500 * time.Millisecond) // the late ok arrives for a closed connection
	if n := f.Gateway().Members("game:1"); n != 0 {
		t.Fatalf("%d members after canceled joins", n)
	}
	if st := f.Gateway().Stats().Sessions.Joins; st["canceled"] != 2 {
		t.Fatalf("join results %v", st)
	}
	if status, _, err := c.JoinWait("game:1", nil, wait); err != nil || status != "ok" {
		t.Fatalf("join after the cancellations: %s %v", status, err)
	}
}
