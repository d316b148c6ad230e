package memory_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
)

const wait = 10 * time.Second

func TestValidateTopic(t *testing.T) {
	t.Parallel()
	b := memory.New()
	for _, topic := range []string{"room:lobby", "a", "room:42:x", "ünïcode:ok", "with space", "a*b", strings.Repeat("x", 255)} {
		if err := b.ValidateTopic(topic); err != nil {
			t.Errorf("ValidateTopic(%q) = %v, want nil", topic, err)
		}
	}
	for _, topic := range []string{"", ":", "room:", ":room", "a::b", "room:*", "*", ">", "a:>:b", strings.Repeat("x", 256), "a\nb", "a\x00", "a\x7f", "a\u0085b", "\xff"} {
		err := b.ValidateTopic(topic)
		if !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%q) = %v, want ErrInvalidTopic", topic, err)
		}
		if _, err := b.Subscribe(context.Background(), topic, func(*broker.Message) {}); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Subscribe(%q) = %v, want ErrInvalidTopic", topic, err)
		}
		if _, err := b.Publish(context.Background(), topic, "e", nil); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("Publish(%q) = %v, want ErrInvalidTopic", topic, err)
		}
	}
}

// collector records messages from a handler.
type collector struct {
	mu   sync.Mutex
	msgs []*broker.Message
	n    chan struct{}
}

func newCollector() *collector { return &collector{n: make(chan struct{}, 1<<16)} }

func (c *collector) handle(m *broker.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	c.n <- struct{}{}
}

func (c *collector) wait(t *testing.T, n int) []*broker.Message {
	t.Helper()
	timeout := time.After(wait)
	for range n {
		select {
		case <-c.n:
		case <-timeout:
			t.Fatalf("timed out waiting for %d messages", n)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*broker.Message(nil), c.msgs...)
}

func TestPublishOrderAndFields(t *testing.T) {
	t.Parallel()
	b := memory.New()
	ctx := context.Background()
	c1, c2 := newCollector(), newCollector()
	s1, err := b.Subscribe(ctx, "room:1", c1.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Unsubscribe()
	s2, err := b.Subscribe(ctx, "room:1", c2.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Unsubscribe()
	if got := b.Subscriptions("room:1"); got != 2 {
		t.Fatalf("Subscriptions = %d, want 2", got)
	}
	if got := b.SubscribeCalls(); got != 2 {
		t.Fatalf("SubscribeCalls = %d, want 2", got)
	}

	payload := []byte(`{"n":0}`)
	if _, err := b.Publish(ctx, "room:1", "ev", payload); err != nil {
		t.Fatal(err)
	}
	payload[2] = 'X' // the broker must have copied it
	if _, err := b.Publish(ctx, "room:2", "other", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := 1; i < n; i++ {
		p := []byte{byte(i), byte(i >> 8), 0xff} // not JSON
		if _, err := b.Publish(ctx, "room:1", "bin", p); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*collector{c1, c2} {
		msgs := c.wait(t, n)
		if len(msgs) != n {
			t.Fatalf("got %d messages, want %d", len(msgs), n)
		}
		if m := msgs[0]; m.Topic != "room:1" || m.Event != "ev" || string(m.Payload) != `{"n":0}` || m.Binary || m.Offset != 0 {
			t.Fatalf("first message = %+v", m)
		}
		for i := 1; i < n; i++ {
			m := msgs[i]
			if !m.Binary || m.Event != "bin" || m.Payload[0] != byte(i) || m.Payload[1] != byte(i>>8) {
				t.Fatalf("message %d = %+v, out of order or wrong", i, m)
			}
		}
	}
	pub := b.Published()
	if len(pub) != n+1 || pub[1].Topic != "room:2" {
		t.Fatalf("Published: %d messages, second on %q", len(pub), pub[1].Topic)
	}
}

func TestBinaryDetection(t *testing.T) {
	t.Parallel()
	b := memory.New()
	for payload, binary := range map[string]bool{
		`{"a":1}`: false, `[1,2]`: false, `"s"`: false, `null`: false,
		``: true, `{`: true, "\x00\x01": true, "\"\xff\"": true,
	} {
		if _, err := b.Publish(context.Background(), "t", "e", []byte(payload)); err != nil {
			t.Fatal(err)
		}
		pub := b.Published()
		if got := pub[len(pub)-1].Binary; got != binary {
			t.Errorf("payload %q: Binary = %v, want %v", payload, got, binary)
		}
	}
}

func TestInjectKeepsFields(t *testing.T) {
	t.Parallel()
	b := memory.New()
	c := newCollector()
	s, err := b.Subscribe(context.Background(), "t", c.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	b.Inject(broker.Message{Topic: "t", Event: "e", Payload: []byte("{}"), Binary: true, Offset: 42})
	m := c.wait(t, 1)[0]
	if !m.Binary || m.Offset != 42 {
		t.Fatalf("got %+v", m)
	}
	if len(b.Published()) != 0 {
		t.Fatal("Inject was recorded as a Publish")
	}
	if n := b.Deliver(&broker.Message{Topic: "t", Event: "sync"}); n != 1 {
		t.Fatalf("Deliver called %d handlers, want 1", n)
	}
	if m := c.wait(t, 1)[1]; m.Event != "sync" {
		t.Fatalf("Deliver: got %+v", m)
	}
}

func TestUnsubscribeStopsDelivery(t *testing.T) {
	t.Parallel()
	b := memory.New()
	ctx := context.Background()
	var after atomic.Bool
	var calls atomic.Int64
	s, err := b.Subscribe(ctx, "t", func(*broker.Message) {
		if after.Load() {
			t.Error("handler call started after Unsubscribe returned")
		}
		calls.Add(1)
		time.Sleep(10 * time.Microsecond)
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 2000 {
			_, _ = b.Publish(ctx, "t", "e", []byte("{}"))
		}
	})
	for calls.Load() < 10 {
		time.Sleep(time.Millisecond)
	}
	if err := s.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	after.Store(true)
	wg.Wait()
	b.Deliver(&broker.Message{Topic: "t"})
	time.Sleep(20 * time.Millisecond)
	if got := b.Subscriptions("t"); got != 0 {
		t.Fatalf("Subscriptions = %d after Unsubscribe", got)
	}
	if err := s.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
}

func TestFaultInjection(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := func(*broker.Message) {}

	b := memory.New()
	boom := errors.New("boom")
	b.SubscribeErr = boom
	if _, err := b.Subscribe(ctx, "t", h); !errors.Is(err, boom) {
		t.Fatalf("Subscribe = %v, want boom", err)
	}
	if b.Subscriptions("t") != 0 || b.SubscribeCalls() != 1 {
		t.Fatalf("after failure: %d subscriptions, %d calls", b.Subscriptions("t"), b.SubscribeCalls())
	}
	b.SubscribeErr = nil

	b.PublishErr = boom
	if _, err := b.Publish(ctx, "t", "e", nil); !errors.Is(err, boom) {
		t.Fatalf("Publish = %v, want boom", err)
	}
	if len(b.Published()) != 0 {
		t.Fatal("failed publish recorded")
	}
	b.PublishErr = nil

	b.SubscribeDelay = 50 * time.Millisecond
	start := time.Now()
	s, err := b.Subscribe(ctx, "t", h)
	if err != nil {
		t.Fatal(err)
	}
	s.Unsubscribe()
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("Subscribe returned after %v, want >= 50ms", d)
	}

	b.SubscribeDelay = time.Hour
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := b.Subscribe(cctx, "t", h); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe with expiring ctx = %v", err)
	}
	if b.Subscriptions("t") != 0 {
		t.Fatal("canceled Subscribe left a subscription")
	}
}
