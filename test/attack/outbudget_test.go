package attack

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// Clients that join a busy room and stop reading, each under its own
// --max-queue-bytes, together hold no more than --max-output-bytes of the
// `fabric serve` process: over it the gateway cuts them (4008, counted in
// fabric_output_budget_cuts_total), a client that reads gets every
// message, and fabric_output_queued_bytes returns to zero when they go.
func TestOutputBudgetBoundsStalledClients(t *testing.T) {
	const (
		limit   = 1 << 20
		stalled = 6
		msgs    = 300
	)
	s := budStart(t, budBinary(t), true,
		"--max-output-bytes", "1048576",
		"--max-queue-bytes", "67108864", // each stalled client stays under its own bound
		"--write-timeout", "60s",
		"--socket-send-buffer", "16384")
	dial := func(opts phxclient.Options) *phxclient.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, "ws://"+s.addr+"/socket/websocket?vsn=2.0.0", phoenix.V2, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	const topic = "room:outbudget"
	reader := dial(phxclient.Options{})
	if st, resp, err := reader.JoinWait(topic, nil, 20*time.Second); err != nil || st != "ok" {
		t.Fatalf("reader join: %s %s %v", st, resp, err)
	}
	var stuck []*phxclient.Client
	for range stalled {
		c := dial(phxclient.Options{NoRead: true, ReadBuffer: 4096})
		if _, err := c.Join(topic, nil); err != nil {
			t.Fatal(err)
		}
		stuck = append(stuck, c)
	}
	// The stalled clients cannot answer: the reader sees them join.
	keys := map[string]bool{}
	for len(keys) < stalled+1 {
		m, err := reader.NextMatch(20*time.Second, func(m phxclient.Msg) bool {
			return m.Event == presence.EventState || m.Event == presence.EventDiff
		})
		if err != nil {
			t.Fatalf("presence: %v (%d members seen)", err, len(keys))
		}
		var p struct{ Joins map[string]json.RawMessage }
		if m.Event == presence.EventState {
			var st map[string]json.RawMessage
			json.Unmarshal(m.Payload, &st)
			p.Joins = st
		} else {
			json.Unmarshal(m.Payload, &p)
		}
		for k := range p.Joins {
			keys[k] = true
		}
	}

	nc, err := nats.Connect("nats://" + s.natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	body := []byte(`{"pad":"` + strings.Repeat("x", 20000) + `"}`)
	// Paced by the reader: a reader that falls megabytes behind is a slow
	// client too, and the budget would rightly cut it.
	for i := range msgs {
		m := nats.NewMsg("fabric.room.outbudget")
		m.Header.Set("Fabric-Event", "m")
		m.Data = body
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if _, err := reader.NextMatch(30*time.Second, func(m phxclient.Msg) bool { return m.Event == "m" }); err != nil {
			t.Fatalf("reader got %d of %d messages: %v", i, msgs, err)
		}
	}
	// 6 × 6 MB sent to clients that read nothing: far over 1 MiB.
	for deadline := time.Now().Add(20 * time.Second); s.metric(`fabric_connections_closed_total{code="4008",transport="websocket"}`) < 1; {
		if time.Now().After(deadline) {
			t.Fatal("no connection closed 4008")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.metric("fabric_output_budget_cuts_total"); n < 1 {
		t.Fatalf("fabric_output_budget_cuts_total = %v", n)
	}
	if q := s.metric("fabric_output_queued_bytes"); q < 0 || q > 2*limit {
		t.Fatalf("fabric_output_queued_bytes = %v, budget %d", q, limit)
	}
	for _, c := range append(stuck, reader) {
		c.Close()
	}
	for deadline := time.Now().Add(20 * time.Second); s.metric(`fabric_connections{transport="websocket"}`) != 0; {
		if time.Now().After(deadline) {
			t.Fatal("connections still open")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if q := s.metric("fabric_output_queued_bytes"); q != 0 {
		t.Fatalf("fabric_output_queued_bytes = %v after every connection closed", q)
	}
}
