package natsbroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// hookBroker is a broker and a service's connection. Which namespaces ask
// about joins is the gateway's policy: the adapter asks whatever it is told.
func hookBroker(t *testing.T) (*natsbroker.Broker, *nats.Conn) {
	t.Helper()
	s := natstest.RunServer(t)
	b, err := natsbroker.New(natstest.Connect(t, s), natsbroker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, natstest.Connect(t, s)
}

// respondOnce answers the next request on subject with reply and hands the
// request's body to the test.
func respondOnce(t *testing.T, nc *nats.Conn, subject string, reply []byte) <-chan []byte {
	t.Helper()
	got := make(chan []byte, 1)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		got <- m.Data
		_ = m.Respond(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.AutoUnsubscribe(1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// The gateway's JSON is the proto3 JSON mapping of hooks.proto, checked
// strictly (an unknown field name fails), and every reply the mapping can
// produce, in either field spelling, reads back.
func TestHookJSONMapping(t *testing.T) {
	b, svc := hookBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, _ := structpb.NewStruct(map[string]any{"state": "running"})
	assigns, _ := structpb.NewStruct(map[string]any{"team": "red"})
	rep := &fabricv1.JoinReply{Ok: true, Response: resp, Assigns: assigns, CacheTtlMs: 1500}
	for _, opts := range []protojson.MarshalOptions{{}, {UseProtoNames: true}} {
		body, _ := opts.Marshal(rep)
		got := respondOnce(t, svc, "fabric_join.game.42", body)
		a, err := b.RequestJoin(ctx, "game:42", broker.JoinMeta{Subject: "alice", ConnID: "c-1", Params: []byte(`{"color":"red"}`),
			Claims: []byte(`{"sub":"alice","guild":7}`), Assigns: []byte(`{"tier":"gold"}`), Granted: true,
			Resume: &broker.Position{Epoch: "e1", Offset: 1 << 60}})
		if err != nil || !a.OK || string(a.Response) != `{"state":"running"}` || string(a.Assigns) != `{"team":"red"}` || a.CacheTTL != 1500*time.Millisecond {
			t.Fatalf("reply %s read as %+v, %v", body, a, err)
		}
		var req fabricv1.JoinRequest
		raw := <-got
		if err := protojson.Unmarshal(raw, &req); err != nil {
			t.Fatalf("request %s: %v", raw, err)
		}
		if req.Topic != "game:42" || req.SubjectId != "alice" || req.ConnectionId != "c-1" || !req.Granted ||
			req.Claims.Fields["guild"].GetNumberValue() != 7 || req.Assigns.Fields["tier"].GetStringValue() != "gold" ||
			req.Params.Fields["color"].GetStringValue() != "red" || req.Resume.GetOffset() != 1<<60 || req.Resume.GetEpoch() != "e1" {
			t.Fatalf("request %s read as %v", raw, &req)
		}
	}

	crep, _ := protojson.Marshal(&fabricv1.ConnectReply{Ok: true, Channels: []string{"vip:{sub}"}, Publish: []string{"chat:x"}})
	got := respondOnce(t, svc, "fabric_connect", crep)
	a, err := b.RequestConnect(ctx, broker.ConnectMeta{Subject: "bob", Params: []byte(`{"room":"7"}`), Transport: "websocket"})
	if err != nil || !a.OK || len(a.Channels) != 1 || a.Channels[0] != "vip:{sub}" || a.Publish[0] != "chat:x" {
		t.Fatalf("connect reply read as %+v, %v", a, err)
	}
	var creq fabricv1.ConnectRequest
	if raw := <-got; protojson.Unmarshal(raw, &creq) != nil || creq.SubjectId != "bob" || creq.Transport != "websocket" || creq.Params.Fields["room"].GetStringValue() != "7" {
		t.Fatalf("connect request %s", raw)
	}
}

// Fail closed: a refusal, a reply that is not the schema's, assigns over
// the cap, no service, no answer.
func TestHookReplies(t *testing.T) {
	b, svc := hookBroker(t)
	ask := func(reply string) (broker.HookAnswer, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		respondOnce(t, svc, "fabric_join.game.1", []byte(reply))
		return b.RequestJoin(ctx, "game:1", broker.JoinMeta{})
	}
	if a, err := ask(`{"reason":"full"}`); err != nil || a.OK || a.Reason != "full" {
		t.Fatalf("refusal: %+v %v", a, err)
	}
	if a, err := ask(`{}`); err != nil || a.OK {
		t.Fatalf("an empty reply must refuse: %+v %v", a, err)
	}
	for _, bad := range []string{`not json`, `{"ok":true,"response":[1]}`, `{"ok":true,"assigns":"x"}`, `{"ok":"yes"}`,
		`{"ok":true,"assigns":{"a":"` + strings.Repeat("x", 5000) + `"}}`} {
		if a, err := ask(bad); !errors.Is(err, broker.ErrInvalidHookReply) {
			t.Fatalf("reply %.40s: %+v %v, want ErrInvalidHookReply", bad, a, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.RequestJoin(ctx, "game:2", broker.JoinMeta{}); !errors.Is(err, broker.ErrNoHandler) {
		t.Fatalf("no service: %v", err)
	}
	if _, err := svc.Subscribe("fabric_join.game.3", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	svc.Flush()
	short, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := b.RequestJoin(short, "game:3", broker.JoinMeta{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent service: %v", err)
	}
}
