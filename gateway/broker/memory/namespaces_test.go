package memory_test

import (
	"context"
	"testing"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
)

// Each persistent namespace has a stream of its own, so two namespaces'
// offsets overlap; a replay must still return its own topic's messages.
func TestReplayKeepsNamespacesApart(t *testing.T) {
	h := memory.NewHistory("room", "feed")
	ctx := context.Background()
	a, err := h.Publish(ctx, "room:a", "m", []byte(`"room"`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Publish(ctx, "feed:b", "m", []byte(`"feed"`))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("offsets %d and %d: the test needs them to overlap", a, b)
	}
	for topic, want := range map[string]string{"room:a": `"room"`, "feed:b": `"feed"`} {
		ns := topic[:4]
		p, err := h.Replay(ctx, topic, broker.Position{Epoch: h.Stream(ns).Epoch()}, 10)
		if err != nil || len(p.Messages) != 1 {
			t.Fatalf("replay %s: %+v %v", topic, p, err)
		}
		if m := p.Messages[0]; m.Topic != topic || string(m.Payload) != want {
			t.Fatalf("replay %s: got %s %s", topic, m.Topic, m.Payload)
		}
	}
}
