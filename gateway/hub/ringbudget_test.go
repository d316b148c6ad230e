package hub_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
)

// The rings of recent messages share one budget: with many persistent
// channels each keeps its share (and always its latest message), so what
// they hold together stays near RingBudget however many channels a client
// fills, where a fixed per-channel size grew with the channel count.
func TestRingBudgetScalesWithChannels(t *testing.T) {
	t.Parallel()
	const (
		channels = 100
		payload  = 4 << 10
		budget   = 256 << 10
		perMsg   = 3*payload + 256 + len("m") // hub's entry cost
	)
	b := &histBroker{Broker: memory.New()}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour, RingBytes: 256 << 10, RingBudget: budget})
	t.Cleanup(h.Close)
	body := []byte(`{"p":"` + strings.Repeat("a", payload-8) + `"}`)
	for i := range channels {
		topic := fmt.Sprintf("room:%d", i)
		m, _ := member(phoenix.V2)
		mustJoin(t, h, topic, m)
		for off := uint64(1); off <= 20; off++ {
			b.Deliver(&broker.Message{Topic: topic, Event: "m", Payload: body, Offset: off, Prev: off - 1})
		}
	}
	// Without the shared budget: 100 channels × min(20 messages, 256 KiB)
	// = 1.7 MB. The hub trims in the background once over the budget.
	limit := int64(budget + budget/8 + channels*perMsg)
	deadline := time.Now().Add(10 * time.Second)
	got := h.Stats().RingBytes
	for (got > limit || got <= 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		got = h.Stats().RingBytes
	}
	if got > limit || got <= 0 {
		t.Fatalf("rings hold %d bytes over %d channels; want at most the budget %d (+1/8) plus one message per channel (%d)", got, channels, budget, limit)
	}
	t.Logf("rings hold %d bytes for %d channels (budget %d)", got, channels, budget)
	// Dropping the channels gives the bytes back.
	h.Close()
	if got := h.Stats().RingBytes; got != 0 {
		t.Fatalf("after Close the rings still count %d bytes", got)
	}
}
