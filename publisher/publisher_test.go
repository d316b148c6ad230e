package publisher_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natsembed"
	"github.com/fabric-rt/fabric/nats/natstest"
	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

const wait = 10 * time.Second

// env is a real nats-server with Fabric's streams (room:* persistent), as
// a gateway would have set them up.
type env struct {
	s  *natsembed.Server
	nc *nats.Conn
	js jetstream.JetStream
	b  *natsbroker.Broker
	p  *publisher.Publisher
}

func setup(t *testing.T, cfg publisher.Config) *env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {MaxAge: time.Hour, MaxMsgsPerChannel: 10_000}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	// The publisher gets its own connection, like a separate service.
	pc := natstest.Connect(t, s)
	p, err := publisher.New(pc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	js, _ := jetstream.New(nc)
	return &env{s: s, nc: nc, js: js, b: b, p: p}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) stream(t *testing.T) jetstream.Stream {
	t.Helper()
	st, err := e.js.Stream(ctxT(t), wire.StreamName("room"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (e *env) epoch(t *testing.T) string {
	return e.stream(t).CachedInfo().Config.Metadata["fabric_epoch"]
}

func (e *env) stored(t *testing.T) uint64 { return e.stream(t).CachedInfo().State.Msgs }

func TestPublishPersistent(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	res, err := e.p.Publish(ctx, "room:lobby", "new_msg", []byte(`{"body":"hi"}`),
		publisher.WithContentType("application/json"), publisher.WithHeader("X-Trace", "abc"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Offset != 1 || res.Epoch == "" || res.Epoch != e.epoch(t) || res.Duplicate {
		t.Fatalf("result %+v, stream epoch %q", res, e.epoch(t))
	}
	m, err := e.stream(t).GetMsg(ctx, res.Offset)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "fabric.room.lobby" || string(m.Data) != `{"body":"hi"}` ||
		m.Header.Get("Fabric-Event") != "new_msg" || m.Header.Get("Content-Type") != "application/json" ||
		m.Header.Get("X-Trace") != "abc" || m.Header.Get("Nats-Msg-Id") == "" {
		t.Fatalf("stored %s %q %v", m.Subject, m.Data, m.Header)
	}
	// Offsets are stream sequences, shared by the namespace's channels.
	res2, err := e.p.Publish(ctx, "room:other", "", []byte("\x00\x01"))
	if err != nil || res2.Offset != 2 || res2.Epoch != res.Epoch {
		t.Fatalf("second publish %+v %v", res2, err)
	}
	m, _ = e.stream(t).GetMsg(ctx, 2)
	if m.Header.Get("Fabric-Event") != "message" || m.Header.Get("Content-Type") != "" {
		t.Fatalf("default event / no content type: %v", m.Header)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	first, err := e.p.Publish(ctx, "room:idem", "new_msg", []byte(`{"n":1}`), publisher.WithIdempotencyKey("order-42"))
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	again, err := e.p.Publish(ctx, "room:idem", "new_msg", []byte(`{"n":1}`), publisher.WithIdempotencyKey("order-42"))
	if err != nil || !again.Duplicate || again.Offset != first.Offset || again.Epoch != first.Epoch {
		t.Fatalf("retry: %+v %v (first %+v)", again, err, first)
	}
	if n := e.stored(t); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
	m, _ := e.stream(t).GetMsg(ctx, first.Offset)
	if m.Header.Get("Nats-Msg-Id") != "order-42" {
		t.Fatalf("message id %q", m.Header.Get("Nats-Msg-Id"))
	}
	// Without a key every publish is its own message.
	a, _ := e.p.Publish(ctx, "room:idem", "new_msg", []byte(`{}`))
	b, _ := e.p.Publish(ctx, "room:idem", "new_msg", []byte(`{}`))
	if a.Offset == b.Offset || a.Duplicate || b.Duplicate || e.stored(t) != 3 {
		t.Fatalf("keyless publishes %+v %+v, %d stored", a, b, e.stored(t))
	}
}

func TestEphemeral(t *testing.T) {
	e := setup(t, publisher.Config{})
	sub, err := e.nc.SubscribeSync("fabric.chat.x")
	if err != nil {
		t.Fatal(err)
	}
	e.nc.Flush()
	res, err := e.p.Publish(ctxT(t), "chat:x", "typing", []byte(`{"who":"ann"}`), publisher.WithContentType("application/json"))
	if err != nil || res != (publisher.Result{}) {
		t.Fatalf("ephemeral: %+v %v", res, err)
	}
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != `{"who":"ann"}` || m.Header.Get("Fabric-Event") != "typing" ||
		m.Header.Get("Nats-Msg-Id") != "" || m.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("delivered %q %v", m.Data, m.Header)
	}
}

// Config.Persistent replaces discovery: a topic it calls persistent must
// be stored by some stream, or the publish fails.
func TestPersistentFunc(t *testing.T) {
	e := setup(t, publisher.Config{Persistent: func(topic string) bool {
		return strings.HasPrefix(topic, "room:") || strings.HasPrefix(topic, "orders:")
	}})
	ctx := ctxT(t)
	if res, err := e.p.Publish(ctx, "room:a", "x", nil); err != nil || res.Offset == 0 || res.Epoch == "" {
		t.Fatalf("room: %+v %v", res, err)
	}
	res, err := e.p.Publish(ctx, "orders:a", "x", nil)
	if !errors.Is(err, publisher.ErrUnavailable) || res != (publisher.Result{}) {
		t.Fatalf("persistent without a stream: %+v %v", res, err)
	}
}

func TestInvalidInput(t *testing.T) {
	e := setup(t, publisher.Config{})
	long := strings.Repeat("a", 256)
	cases := []struct {
		name, topic, event string
		opts               []publisher.Option
		want               error
	}{
		{"empty topic", "", "x", nil, publisher.ErrInvalidTopic},
		{"empty segment", "room::a", "x", nil, publisher.ErrInvalidTopic},
		{"wildcard segment", "room:*", "x", nil, publisher.ErrInvalidTopic},
		{"gt segment", "room:>", "x", nil, publisher.ErrInvalidTopic},
		{"control char", "room:a\nb", "x", nil, publisher.ErrInvalidTopic},
		{"too long", "room:" + long, "x", nil, publisher.ErrInvalidTopic},
		{"phx event", "room:a", "phx_reply", nil, publisher.ErrInvalidEvent},
		{"fabric event", "room:a", "fabric:offset", nil, publisher.ErrInvalidEvent},
		{"padded event", "room:a", " x", nil, publisher.ErrInvalidEvent},
		{"newline event", "room:a", "a\r\nb", nil, publisher.ErrInvalidEvent},
		{"long event", "room:a", long, nil, publisher.ErrInvalidEvent},
		{"bad utf8 event", "room:a", "a\xff", nil, publisher.ErrInvalidEvent},
		{"rollup header", "room:a", "x", []publisher.Option{publisher.WithHeader("Nats-Rollup", "sub")}, publisher.ErrInvalidOption},
		{"event header", "room:a", "x", []publisher.Option{publisher.WithHeader("fabric-event", "phx_close")}, publisher.ErrInvalidOption},
		{"content type header", "room:a", "x", []publisher.Option{publisher.WithHeader("Content-Type", "x")}, publisher.ErrInvalidOption},
		{"header name", "room:a", "x", []publisher.Option{publisher.WithHeader("a b", "v")}, publisher.ErrInvalidOption},
		{"header value", "room:a", "x", []publisher.Option{publisher.WithHeader("X", "a\r\nNats-Rollup: sub")}, publisher.ErrInvalidOption},
		{"empty key", "room:a", "x", []publisher.Option{publisher.WithIdempotencyKey("")}, publisher.ErrInvalidOption},
		{"key with newline", "room:a", "x", []publisher.Option{publisher.WithIdempotencyKey("a\nb")}, publisher.ErrInvalidOption},
		{"content type newline", "room:a", "x", []publisher.Option{publisher.WithContentType("text/plain\r\nX: y")}, publisher.ErrInvalidOption},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := e.p.Publish(ctxT(t), c.topic, c.event, []byte(`{}`), c.opts...)
			if !errors.Is(err, c.want) || res != (publisher.Result{}) {
				t.Fatalf("got %+v %v, want %v", res, err, c.want)
			}
		})
	}
	if !errors.Is(func() error { _, err := e.p.Publish(ctxT(t), "room:a:", "x", nil); return err }(), subject.ErrInvalidTopic) {
		t.Fatal("topic errors should match subject.ErrInvalidTopic too")
	}
	if n := e.stored(t); n != 0 {
		t.Fatalf("%d messages stored by refused publishes", n)
	}
}

// ValidEvent must agree with what the gateway delivers: an event the
// publisher accepts is never dropped by natsbroker, and one it refuses is.
// Both build on subject.ValidEvent, but ValidEvent adds a rule of its own
// (no surrounding spaces, which the phoenix codec refuses on a client's
// push; natsbroker delivers such events from plain NATS clients, so the
// list below leaves them out). It checks behaviour end to end, through
// the broker's subscription, not a copy of a constant kept in step.
func TestValidEventMatchesGateway(t *testing.T) {
	e := setup(t, publisher.Config{})
	got := make(chan string, 100)
	sub, err := e.b.Subscribe(ctxT(t), "chat:ev", func(m *broker.Message) { got <- m.Event })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	events := []string{"new_msg", "message", "a", "phx_join", "phx_reply", "phx", "fabric:offset", "fabric",
		"fabric-x", "ünïcødé", "tab\there", "del\x7f", "a\x00b", strings.Repeat("e", 255), strings.Repeat("e", 256), "bad\xffutf8"}
	for _, ev := range events {
		m := nats.NewMsg("fabric.chat.ev")
		m.Header[wire.HeaderEvent] = []string{ev}
		m.Data = []byte(`{}`)
		dropped := e.b.Dropped()
		if err := e.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		// A marker after each event: once it arrives, the event was either
		// delivered before it or dropped.
		mark := nats.NewMsg("fabric.chat.ev")
		mark.Header[wire.HeaderEvent] = []string{"marker"}
		e.nc.PublishMsg(mark)
		delivered := false
		for ev2 := range got {
			if ev2 == "marker" {
				break
			}
			delivered = ev2 == ev
		}
		if delivered != publisher.ValidEvent(ev) || delivered == (e.b.Dropped() > dropped) {
			t.Errorf("event %q: gateway delivered=%v, ValidEvent=%v", ev, delivered, publisher.ValidEvent(ev))
		}
	}
}

func TestBroadcast(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	sub, _ := e.nc.SubscribeSync("fabric.chat.c")
	e.nc.Flush()
	topics := []string{"room:a", "room:b", "chat:c"}
	res, err := e.p.Broadcast(ctx, topics, "news", []byte(`{"v":1}`), publisher.WithIdempotencyKey("k1"))
	if err != nil || len(res) != 3 {
		t.Fatalf("broadcast: %+v %v", res, err)
	}
	if res[0].Offset == 0 || res[1].Offset == 0 || res[0].Offset == res[1].Offset || res[2] != (publisher.Result{}) {
		t.Fatalf("results %+v", res)
	}
	if _, err := sub.NextMsg(wait); err != nil {
		t.Fatalf("ephemeral topic: %v", err)
	}
	// The same key on different topics is not a duplicate; a retried
	// broadcast is.
	again, err := e.p.Broadcast(ctx, topics, "news", []byte(`{"v":1}`), publisher.WithIdempotencyKey("k1"))
	if err != nil || !again[0].Duplicate || !again[1].Duplicate || again[0].Offset != res[0].Offset || again[1].Offset != res[1].Offset {
		t.Fatalf("retried broadcast %+v %v", again, err)
	}
	if n := e.stored(t); n != 2 {
		t.Fatalf("%d stored, want 2", n)
	}
	// One bad topic: nothing is sent.
	if _, err := e.p.Broadcast(ctx, []string{"room:a", "room::"}, "news", nil); !errors.Is(err, publisher.ErrInvalidTopic) {
		t.Fatalf("bad topic in broadcast: %v", err)
	}
	if n := e.stored(t); n != 2 {
		t.Fatalf("%d stored after a refused broadcast", n)
	}
}

// A server that goes away: the publish fails at once, never a success.
func TestServerDown(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	if _, err := e.p.Publish(ctx, "room:a", "x", nil); err != nil {
		t.Fatal(err)
	}
	e.s.Shutdown()
	for _, topic := range []string{"room:a", "chat:a"} {
		start := time.Now()
		res, err := e.p.Publish(ctx, topic, "x", nil)
		if !errors.Is(err, publisher.ErrUnavailable) || res != (publisher.Result{}) {
			t.Fatalf("%s with the server down: %+v %v", topic, res, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("%s: took %v to fail", topic, d)
		}
	}
}

// A persistent namespace whose stream disappears (and no gateway recreates
// it) must not turn into unacknowledged core publishes.
func TestStreamDeleted(t *testing.T) {
	e := setup(t, publisher.Config{Timeout: time.Second})
	ctx := ctxT(t)
	if _, err := e.p.Publish(ctx, "room:a", "x", nil); err != nil {
		t.Fatal(err)
	}
	e.b.Close() // no more recreation on the DELETED advisory
	if err := e.js.DeleteStream(ctx, wire.StreamName("room")); err != nil {
		t.Fatal(err)
	}
	res, err := e.p.Publish(ctx, "room:a", "x", nil)
	if !errors.Is(err, publisher.ErrUnavailable) || res != (publisher.Result{}) {
		t.Fatalf("publish without its stream: %+v %v", res, err)
	}
	// Refresh is the explicit way to accept that the namespace is now
	// ephemeral.
	e.p.Refresh()
	if res, err := e.p.Publish(ctx, "room:a", "x", nil); err != nil || res != (publisher.Result{}) {
		t.Fatalf("after Refresh: %+v %v", res, err)
	}
}

// A recreated stream is a new epoch; the cached one must not outlive it.
func TestEpochFollowsRecreatedStream(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	first, err := e.p.Publish(ctx, "room:a", "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	// natsbroker recreates the deleted stream with a new epoch.
	if err := e.js.DeleteStream(ctx, wire.StreamName("room")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		res, err := e.p.Publish(ctx, "room:a", "x", nil)
		if err == nil && res.Epoch != first.Epoch {
			if res.Epoch != e.epoch(t) || res.Offset != 1 {
				t.Fatalf("after recreation: %+v, stream epoch %q", res, e.epoch(t))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("epoch never changed: %+v %v", res, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTooLarge(t *testing.T) {
	e := setup(t, publisher.Config{})
	big := make([]byte, e.nc.MaxPayload()+1)
	for _, topic := range []string{"room:a", "chat:a"} {
		if _, err := e.p.Publish(ctxT(t), topic, "x", big); !errors.Is(err, publisher.ErrTooLarge) {
			t.Fatalf("%s: %v", topic, err)
		}
	}
}

func TestNewValidates(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	if _, err := publisher.New(nil, publisher.Config{}); err == nil {
		t.Fatal("nil connection accepted")
	}
	if _, err := publisher.New(nc, publisher.Config{Prefix: "a.>"}); err == nil {
		t.Fatal("wildcard prefix accepted")
	}
	p, err := publisher.New(nc, publisher.Config{Prefix: "acme.fabric"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if s, _ := p.Subject("room:a.b"); s != "acme.fabric.room.a=2Eb" {
		t.Fatalf("subject %q", s)
	}
}

// Advisories are at-most-once: an epoch changed behind the publisher's
// back (no advisory received) is picked up within the cache's lifetime.
func TestEpochWithoutAdvisories(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	e.p.StopAdvisories()
	first, err := e.p.Publish(ctx, "room:a", "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.stream(t).CachedInfo().Config
	cfg.Metadata["fabric_epoch"] = "restoredepoch"
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if res, _ := e.p.Publish(ctx, "room:a", "x", nil); res.Epoch != first.Epoch {
		t.Fatalf("epoch re-read at once (%q): this test no longer tests the cache", res.Epoch)
	}
	e.p.Advance(6 * time.Second)
	if res, err := e.p.Publish(ctx, "room:a", "x", nil); err != nil || res.Epoch != "restoredepoch" {
		t.Fatalf("after the cache's lifetime: %+v %v", res, err)
	}
}

// A stream no gateway has stamped yet (created outside Fabric) has the
// epoch gateways will record for it (wire.Epoch, one rule for both), not
// "": a client resuming from the publish result must not be told its
// epoch changed once a gateway adopts the stream.
func TestEpochOfUnstampedStreamIsTheGatewaysOne(t *testing.T) {
	e := setup(t, publisher.Config{})
	ctx := ctxT(t)
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: wire.StreamName("solo"), Subjects: []string{"fabric.solo.>"}}); err != nil {
		t.Fatal(err)
	}
	res, err := e.p.Publish(ctx, "solo:a", "x", nil)
	if err != nil || res.Offset != 1 || res.Epoch == "" {
		t.Fatalf("publish to an unstamped stream: %+v %v", res, err)
	}
	b, err := natsbroker.New(e.nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"solo": {}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := e.js.Stream(ctx, wire.StreamName("solo"))
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.Metadata[wire.MetaEpoch]; got != res.Epoch {
		t.Fatalf("gateway recorded epoch %q, publisher returned %q", got, res.Epoch)
	}
}
