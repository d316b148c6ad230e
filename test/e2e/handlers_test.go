package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// Phoenix's handle_in over NATS: a phoenix.js push on a namespace with
// `pushes: request` is answered by a Go service, its reply arriving in
// .receive("ok"); errors, missing services and slow ones get clear replies.
func TestPushesRoutedToServices(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{
			"game": {Pushes: namespace.PushesRequest, PushTimeout: 300 * time.Millisecond},
			"slow": {Pushes: namespace.PushesRequest, PushTimeout: 300 * time.Millisecond},
		}
	})
	events := make(chan *nats.Msg, 100)
	if _, err := f.nc.ChanSubscribe("fabric_events.>", events); err != nil {
		t.Fatal(err)
	}
	var gotHeaders nats.Header
	if _, err := f.nc.Subscribe("fabric_in.game.>", func(m *nats.Msg) {
		gotHeaders = m.Header
		if m.Header.Get("Fabric-Event") != "move" {
			r := nats.NewMsg(m.Reply)
			r.Header.Set("Fabric-Status", "error")
			r.Data = []byte(`{"reason":"bad move"}`)
			m.RespondMsg(r)
			return
		}
		m.Respond(append([]byte(`{"accepted":true,"echo":`), append(m.Data, '}')...))
	}); err != nil {
		t.Fatal(err)
	}
	// A service that never answers.
	if _, err := f.nc.Subscribe("fabric_in.slow.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()

	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"game:42", "slow:1", "room:nobody"} {
		if s, _ := p.Join(topic, map[string]any{"color": "red"}); s != "ok" {
			t.Fatalf("join %s: %s", topic, s)
		}
	}
	status, resp := p.Push("game:42", "move", map[string]any{"x": 1})
	if status != "ok" || string(resp) != `{"accepted":true,"echo":{"x":1}}` {
		t.Fatalf("move: %s %s", status, resp)
	}
	if gotHeaders.Get("Fabric-Topic") != "game:42" || gotHeaders.Get("Fabric-Conn") == "" ||
		!strings.Contains(gotHeaders.Get("Fabric-Join-Params"), `"color":"red"`) {
		t.Fatalf("request headers: %v", gotHeaders)
	}
	if status, resp = p.Push("game:42", "teleport", map[string]any{}); status != "error" || string(resp) != `{"reason":"bad move"}` {
		t.Fatalf("refused move: %s %s", status, resp)
	}
	start := time.Now()
	if status, resp = p.Push("slow:1", "move", map[string]any{}); status != "error" || string(resp) != `{"reason":"timeout"}` {
		t.Fatalf("slow service: %s %s", status, resp)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("timeout reply took %v", el)
	}
	// Pushes on an ephemeral namespace without routing are published as
	// usual; routing only where configured.
	if status, _ = p.Push("room:nobody", "hi", map[string]any{}); status != "ok" {
		t.Fatalf("published push: %s", status)
	}

	// Lifecycle events on fabric_events.… (best effort).
	p.Leave("game:42")
	p.Disconnect(0, "")
	want := map[string]bool{"fabric_events.connect": false, "fabric_events.join.game.42": false,
		"fabric_events.leave.game.42": false, "fabric_events.disconnect": false}
	deadline := time.After(wait)
	for missing := len(want); missing > 0; {
		select {
		case m := <-events:
			if seen, ok := want[m.Subject]; ok && !seen {
				want[m.Subject] = true
				missing--
				var body struct{ Conn string }
				if json.Unmarshal(m.Data, &body) != nil || body.Conn == "" {
					t.Fatalf("event %s body %s", m.Subject, m.Data)
				}
			}
		case <-deadline:
			t.Fatalf("lifecycle events seen: %v", want)
		}
	}
}

// No service at all: the client is told at once instead of timing out.
func TestPushWithoutHandler(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"game": {Pushes: namespace.PushesRequest}}
	})
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.Join("game:1", nil); s != "ok" {
		t.Fatal(s)
	}
	if status, resp := p.Push("game:1", "move", map[string]any{}); status != "error" || string(resp) != `{"reason":"no_handler"}` {
		t.Fatalf("no handler: %s %s", status, resp)
	}
}
