package natsbroker_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// Channels starting empty share one recent reading of the stream's last
// sequence instead of a stream-info request each, and a message published
// after such a start is delivered and replayed from the head the channel
// was given.
func TestEmptyChannelsShareStreamInfo(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	api := func() uint64 {
		t.Helper()
		jsz, err := e.srv.NATS().Jsz(&server.JSzOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return jsz.API.Total
	}
	e.jsPublish(t, "fabric.room.other", "m", `{}`)
	before := api()
	const n = 50
	var subs []broker.Subscription
	got := make(chan *broker.Message, 10)
	for i := range n {
		h := func(*broker.Message) {}
		if i == n-1 {
			h = func(m *broker.Message) { got <- m }
		}
		s, err := e.b.Subscribe(ctx(t), fmt.Sprintf("room:empty%d", i), h)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	// Generous: a slow machine may take more than a second for the 50
	// starts (one reading a second), but not one reading per start.
	if calls := api() - before; calls > n/5 {
		t.Fatalf("%d JetStream API requests for %d empty channels", calls, n)
	}
	last := subs[n-1].(broker.HeadSubscription).Head()
	seq := e.jsPublish(t, fmt.Sprintf("fabric.room.empty%d", n-1), "m", `{"x":1}`)
	if m := recv(t, got); m.Offset != seq || m.Prev != last.Offset {
		t.Fatalf("live %+v, want offset %d prev %d", m, seq, last.Offset)
	}
	p, err := e.b.Replay(ctx(t), fmt.Sprintf("room:empty%d", n-1), last, 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Reason != "" || len(p.Messages) != 1 || p.Messages[0].Offset != seq {
		t.Fatalf("replay from the head: %+v", p)
	}
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}
