package natsbroker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
)

const wait = 5 * time.Second

type env struct {
	b   *natsbroker.Broker
	nc  *nats.Conn // the broker's connection
	pub *nats.Conn // a plain second client, like a backend service
}

func setup(t *testing.T) env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	return env{b: b, nc: nc, pub: natstest.Connect(t, s)}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// collect subscribes and returns a channel of delivered messages.
func collect(t *testing.T, e env, topic string) (broker.Subscription, <-chan *broker.Message) {
	t.Helper()
	ch := make(chan *broker.Message, 100)
	sub, err := e.b.Subscribe(ctx(t), topic, func(m *broker.Message) { ch <- m })
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	return sub, ch
}

func recv(t *testing.T, ch <-chan *broker.Message) *broker.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait * 3):
		t.Fatal("no message delivered")
		return nil
	}
}

// recvChain receives one message per offset in seqs, in that order, each
// chained to the one before it (Prev), the first to head: nothing lost,
// duplicated or reordered, and no reset.
func recvChain(t *testing.T, ch <-chan *broker.Message, head uint64, seqs []uint64) {
	t.Helper()
	prev := head
	for i, want := range seqs {
		m := recv(t, ch)
		if m.Reset || m.Offset != want || m.Prev != prev {
			t.Fatalf("message %d: %+v (want offset %d prev %d)", i, m, want, prev)
		}
		prev = m.Offset
	}
}

func publish(t *testing.T, nc *nats.Conn, m *nats.Msg) {
	t.Helper()
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
}

func TestDelivery(t *testing.T) {
	e := setup(t)
	_, ch := collect(t, e, "room:lobby")

	tests := []struct {
		name    string
		header  nats.Header
		body    []byte
		event   string
		payload []byte
		binary  bool
	}{
		{"json with event", nats.Header{"Fabric-Event": {"new_msg"}}, []byte(`{"body":"hi"}`), "new_msg", []byte(`{"body":"hi"}`), false},
		{"no header", nil, []byte(`{"a":1}`), "message", []byte(`{"a":1}`), false},
		{"json scalar", nil, []byte(`"hi"`), "message", []byte(`"hi"`), false},
		{"binary body", nats.Header{"Fabric-Event": {"frame"}}, []byte{0x00, 0xff, 0x10}, "frame", []byte{0x00, 0xff, 0x10}, true},
		{"plain text", nil, []byte("hello"), "message", []byte("hello"), true},
		{"json with invalid utf8", nil, []byte("\"\xff\""), "message", []byte("\"\xff\""), true},
		{"empty body", nil, nil, "message", []byte("{}"), false},
		{"empty body with event", nats.Header{"Fabric-Event": {"ping"}}, nil, "ping", []byte("{}"), false},
		{"lower-case header name", nats.Header{"fabric-event": {"lc"}}, []byte(`{}`), "lc", []byte(`{}`), false},
		{"event trimmed", nats.Header{"Fabric-Event": {"  spaced  "}}, []byte(`1`), "spaced", []byte(`1`), false},
		{"content-type json", nats.Header{"Content-Type": {"application/json; charset=utf-8"}}, []byte(`[1]`), "message", []byte(`[1]`), false},
		{"content-type json, bad body", nats.Header{"Content-Type": {"application/json"}}, []byte(`{`), "message", []byte(`{`), true},
		{"content-type json, empty", nats.Header{"Content-Type": {"application/json"}}, nil, "message", []byte("{}"), false},
		{"content-type binary, json body", nats.Header{"Content-Type": {"application/octet-stream"}}, []byte(`{"a":1}`), "message", []byte(`{"a":1}`), true},
		{"content-type binary, empty", nats.Header{"Content-Type": {"application/x-protobuf"}}, nil, "message", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			publish(t, e.pub, &nats.Msg{Subject: "fabric.room.lobby", Header: tt.header, Data: tt.body})
			m := recv(t, ch)
			if m.Topic != "room:lobby" || m.Event != tt.event || !bytes.Equal(m.Payload, tt.payload) || m.Binary != tt.binary || m.Offset != 0 {
				t.Fatalf("got {%q %q %q binary=%v offset=%d}, want {room:lobby %q %q binary=%v 0}",
					m.Topic, m.Event, m.Payload, m.Binary, m.Offset, tt.event, tt.payload, tt.binary)
			}
		})
	}
}

func TestUnusableEventsDropped(t *testing.T) {
	var logs bytes.Buffer
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	pub := natstest.Connect(t, s)
	ch := make(chan *broker.Message, 10)
	if _, err := b.Subscribe(ctx(t), "room:lobby", func(m *broker.Message) { ch <- m }); err != nil {
		t.Fatal(err)
	}
	bad := []string{"", "   ", strings.Repeat("e", 256), "phx_close", "phx_reply", "fabric:offset", "a\x7fb"}
	for _, ev := range bad {
		publish(t, pub, &nats.Msg{Subject: "fabric.room.lobby", Header: nats.Header{"Fabric-Event": {ev}}, Data: []byte(`{"secret":1}`)})
	}
	// A good message after the bad ones proves they were dropped, not delayed.
	publish(t, pub, &nats.Msg{Subject: "fabric.room.lobby", Header: nats.Header{"Fabric-Event": {strings.Repeat("e", 255)}}, Data: []byte(`{}`)})
	if m := recv(t, ch); m.Event != strings.Repeat("e", 255) {
		t.Fatalf("unexpected event %q delivered", m.Event)
	}
	if got := b.Dropped(); got != uint64(len(bad)) {
		t.Fatalf("Dropped() = %d, want %d", got, len(bad))
	}
	if strings.Contains(logs.String(), "secret") || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("logs: %s", logs.String())
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	e := setup(t)
	sub, ch := collect(t, e, "room:lobby")
	publish(t, e.pub, &nats.Msg{Subject: "fabric.room.lobby", Data: []byte(`1`)})
	recv(t, ch)

	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if n := e.nc.NumSubscriptions(); n != 0 {
		t.Fatalf("NumSubscriptions = %d after Unsubscribe", n)
	}
	publish(t, e.pub, &nats.Msg{Subject: "fabric.room.lobby", Data: []byte(`2`)})
	// The broker's own round trip orders this after anything in flight.
	if err := e.nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-ch:
		t.Fatalf("delivered after Unsubscribe: %q", m.Payload)
	case <-time.After(100 * time.Millisecond):
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
}

// TestUnsubscribeWhileDelivering checks the port's guarantee under load:
// once Unsubscribe returns, no handler call starts (nats.go alone does not
// promise that).
func TestUnsubscribeWhileDelivering(t *testing.T) {
	e := setup(t)
	for range 20 {
		var after atomic.Bool
		var bad atomic.Int64
		sub, err := e.b.Subscribe(ctx(t), "room:busy", func(*broker.Message) {
			if after.Load() {
				bad.Add(1)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					_ = e.pub.Publish("fabric.room.busy", []byte(`1`))
				}
			}
		})
		time.Sleep(5 * time.Millisecond)
		if err := sub.Unsubscribe(); err != nil {
			t.Fatal(err)
		}
		after.Store(true)
		time.Sleep(5 * time.Millisecond)
		close(stop)
		wg.Wait()
		if n := bad.Load(); n != 0 {
			t.Fatalf("%d handler calls after Unsubscribe returned", n)
		}
	}
}

func TestInvalidTopic(t *testing.T) {
	e := setup(t)
	for _, topic := range []string{"room:*", "room:>", "room:", "a::b", "", "room:\r\nPUB x 1", strings.Repeat("a", 256)} {
		if err := e.b.ValidateTopic(topic); !errors.Is(err, broker.ErrInvalidTopic) || !errors.Is(err, subject.ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%q) = %v", topic, err)
		}
		_, err := e.b.Subscribe(ctx(t), topic, func(*broker.Message) {})
		if !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Subscribe(%q) = %v", topic, err)
		}
		if _, err := e.b.Publish(ctx(t), topic, "x", nil); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Publish(%q) = %v", topic, err)
		}
	}
	if err := e.b.ValidateTopic("a::b"); err == nil || err.Error() != "broker: invalid topic: empty segment" {
		t.Errorf("error text %v", err)
	}
	if n := e.nc.NumSubscriptions(); n != 0 {
		t.Fatalf("NumSubscriptions = %d", n)
	}
	if err := e.b.ValidateTopic("room:lobby"); err != nil {
		t.Fatal(err)
	}
}

func TestSubscribeRegistersInterestOnServer(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{Prefix: "acme.fabric"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	before := s.NATS().NumSubscriptions()
	// No deadline on purpose: nats.go refuses to flush without one, so the
	// broker must supply its own.
	sub, err := b.Subscribe(context.Background(), "room:lobby", func(*broker.Message) {})
	if err != nil {
		t.Fatal(err)
	}
	// Interest is registered when Subscribe returns, without polling.
	if got := s.NATS().NumSubscriptions(); got != before+1 {
		t.Fatalf("server subscriptions %d, want %d", got, before+1)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	if got := s.NATS().NumSubscriptions(); got != before {
		t.Fatalf("server subscriptions %d after Unsubscribe, want %d", got, before)
	}
}

func TestSubscribeCanceledContext(t *testing.T) {
	e := setup(t)
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.b.Subscribe(c, "room:lobby", func(*broker.Message) {}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if n := e.nc.NumSubscriptions(); n != 0 {
		t.Fatalf("NumSubscriptions = %d", n)
	}
}

func TestSubscribeClosedConnection(t *testing.T) {
	e := setup(t)
	e.nc.Close()
	if _, err := e.b.Subscribe(ctx(t), "room:lobby", func(*broker.Message) {}); err == nil {
		t.Fatal("Subscribe on a closed connection succeeded")
	}
}

func TestPublish(t *testing.T) {
	e := setup(t)
	sub, err := e.pub.SubscribeSync("fabric.room.lobby")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.pub.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{"new_msg", "message"} {
		if _, err := e.b.Publish(ctx(t), "room:lobby", ev, []byte(`{"body":"hi"}`)); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Header.Get(wire.HeaderEvent); got != ev || string(m.Data) != `{"body":"hi"}` {
			t.Fatalf("got event %q data %q", got, m.Data)
		}
	}
}

func TestPublishRoundTrip(t *testing.T) {
	e := setup(t)
	_, ch := collect(t, e, "room:a.b")
	if _, err := e.b.Publish(context.Background(), "room:a.b", "new_msg", []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, ch)
	if m.Topic != "room:a.b" || m.Event != "new_msg" || !m.Binary || !bytes.Equal(m.Payload, []byte{1, 2}) {
		t.Fatalf("got %+v", m)
	}
}

func TestPublishInvalidEvent(t *testing.T) {
	e := setup(t)
	for _, ev := range []string{"", " x", "x\r\nPUB y 1", "phx_close", "fabric:offset", strings.Repeat("e", 256)} {
		if _, err := e.b.Publish(ctx(t), "room:lobby", ev, nil); !errors.Is(err, natsbroker.ErrInvalidEvent) {
			t.Errorf("Publish event %q: %v", ev, err)
		}
	}
}

func TestNewRejectsBadPrefix(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	for _, p := range []string{"$SYS", "a.*", "a..b", "a b"} {
		if _, err := natsbroker.New(nc, natsbroker.Config{Prefix: p}); !errors.Is(err, subject.ErrInvalidPrefix) {
			t.Errorf("New(prefix %q) = %v", p, err)
		}
	}
	if _, err := natsbroker.New(nil, natsbroker.Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// TestSlowConsumerCounted forces nats.go to drop by blocking the handler
// past the subscription's pending limit and checks the drop is counted and
// logged, while the connection's own handlers stay as the caller set them.
func TestSlowConsumerCounted(t *testing.T) {
	s := natstest.RunServer(t)
	var asyncErrs atomic.Int64
	nc := natstest.Connect(t, s, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { asyncErrs.Add(1) }))
	var logs syncBuffer
	b, err := natsbroker.New(nc, natsbroker.Config{
		Logger:           slog.New(slog.NewTextHandler(&logs, nil)),
		PendingMsgsLimit: 50,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	pub := natstest.Connect(t, s)
	release := make(chan struct{})
	var got atomic.Int64
	sub, err := b.Subscribe(ctx(t), "room:slow", func(*broker.Message) {
		<-release
		got.Add(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{}`)
	const n = 200
	for range n {
		if err := pub.Publish("fabric.room.slow", body); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(wait); err != nil {
		t.Fatal(err)
	}
	close(release)
	deadline := time.Now().Add(wait)
	for b.SlowConsumerDrops() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if b.SlowConsumerDrops() == 0 {
		t.Fatal("no slow-consumer drops counted")
	}
	// The count is polled from nats.go, so it may still grow after the
	// first drops were seen: read it afresh until the sum is complete.
	drops := b.SlowConsumerDrops()
	for got.Load()+int64(drops) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		drops = b.SlowConsumerDrops()
	}
	if got.Load()+int64(drops) != n {
		t.Fatalf("delivered %d + dropped %d != %d", got.Load(), drops, n)
	}
	if !strings.Contains(logs.String(), "slow consumer") {
		t.Fatalf("no warning logged: %s", logs.String())
	}
	if asyncErrs.Load() == 0 {
		t.Fatal("caller's error handler was not called (was it replaced?)")
	}
	_ = sub.Unsubscribe()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
