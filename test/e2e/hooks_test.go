package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/auth"
	"github.com/fabric-rt/fabric/internal/phxnode"
	"github.com/fabric-rt/fabric/nats/natsbroker"
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
		c.Namespaces = map[string]natsbroker.Namespace{
			"game": {Pushes: natsbroker.PushesRequest, Joins: natsbroker.JoinsRequest},
			"slow": {Joins: natsbroker.JoinsRequest, JoinTimeout: 300 * time.Millisecond},
			"none": {Joins: natsbroker.JoinsRequest},
			"open": {Joins: natsbroker.JoinsRequest, JoinScope: "all"},
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
