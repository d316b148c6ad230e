package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

const secret = "an-hs256-test-secret-of-32-bytes!"

// The example against a real Fabric and the phoenix client: members get
// the guild's state as their join reply and their role as assigns in push
// requests; anyone else is refused with the example's reason.
func TestJoinHookExample(t *testing.T) {
	a := testkit.StartApp(t, app.Config{Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "127.0.0.1:0", DataDir: t.TempDir(),
		JWTSecret: secret, AllowQueryToken: true,
		Namespaces: map[string]namespace.Namespace{"guild": {Joins: namespace.JoinsRequest, Pushes: namespace.PushesRequest}}})
	nc := testkit.Connect(t, a.NATSURL())
	if _, err := serve(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("fabric_in.guild.>", func(m *nats.Msg) { _ = m.Respond([]byte(m.Header.Get("Fabric-Assigns"))) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	join := func(sub string) (string, json.RawMessage, *phxnode.Puppet) {
		tok, err := auth.Mint(auth.Config{Secret: []byte(secret)}, auth.MintClaims{Subject: sub, Channels: []string{"guild:*"}, Publish: []string{"guild:*"}})
		if err != nil {
			t.Fatal(err)
		}
		p := phxnode.Start(t)
		if err := p.Connect("ws://"+a.HTTPAddr()+"/socket", map[string]any{"token": tok}, nil); err != nil {
			t.Fatal(err)
		}
		r := p.JoinOpts("guild:42", nil, map[string]any{"leaveOnError": true, "timeout": int((10 * time.Second).Milliseconds())})
		return r.Status, r.Response, p
	}
	status, resp, p := join("alice")
	if status != "ok" || string(resp) != `{"guild":"42","members":2}` {
		t.Fatalf("member: %s %s", status, resp)
	}
	if status, resp := p.Push("guild:42", "hello", nil); status != "ok" || string(resp) != `{"role":"officer"}` {
		t.Fatalf("push handler's assigns: %s %s", status, resp)
	}
	if status, resp, _ := join("carol"); status != "error" || string(resp) != `{"reason":"not a member"}` {
		t.Fatalf("stranger: %s %s", status, resp)
	}
}
