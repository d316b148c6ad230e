package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// Joins of a persistent presence channel that is already live on the
// gateway cost no NATS round trip: no JetStream API call, no presence
// sync, and the presence diffs are one per flush, not one per join.
func TestLiveChannelJoinsStayOffNATS(t *testing.T) {
	a := startNS(t, namespace.Namespace{History: true, MaxAge: time.Hour, Presence: true, PresenceTTL: ttl})
	url := wsURL(a.HTTPAddr()) + "/websocket?vsn=2.0.0"
	dial := func() *phxclient.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, url, phoenix.V2, phxclient.Options{})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	first := dial()
	if st, _, err := first.JoinWait("room:live", map[string]any{"user": "first"}, wait); err != nil || st != "ok" {
		t.Fatalf("first join: %s %v", st, err)
	}
	if _, err := first.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "presence_state" }); err != nil {
		t.Fatalf("first presence_state: %v", err)
	}

	nc, err := nats.Connect(a.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// The broker re-reads each persistent namespace's stream info every
	// 5 s (epoch refresh): those requests are counted apart.
	var jsAPI, infos, syncs, diffs atomic.Int64
	var other atomic.Value
	counting := time.Now() // the refreshes counted happen from here on, not only during the joins
	if _, err := nc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Subject, "$JS.API.STREAM.INFO.") {
			infos.Add(1)
			return
		}
		jsAPI.Add(1)
		other.Store(m.Subject)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("fabric_presence.>", func(m *nats.Msg) {
		var w struct{ T string }
		json.Unmarshal(m.Data, &w)
		switch w.T {
		case "sync":
			syncs.Add(1)
		case "diff":
			diffs.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const n = 200
	t0 := time.Now()
	for i := 0; i < n; i++ {
		c := dial()
		if st, _, err := c.JoinWait("room:live", map[string]any{"user": fmt.Sprintf("u%d", i)}, wait); err != nil || st != "ok" {
			t.Fatalf("join %d: %s %v", i, st, err)
		}
	}
	took := time.Since(t0)
	time.Sleep(300 * time.Millisecond) // the last flush
	nc.Flush()
	t.Logf("%d joins in %v: %d JetStream API requests (and %d periodic stream infos), %d presence syncs, %d presence diffs",
		n, took.Round(time.Millisecond), jsAPI.Load(), infos.Load(), syncs.Load(), diffs.Load())
	if jsAPI.Load() != 0 || syncs.Load() != 0 {
		t.Fatalf("joins of a live channel went to NATS: %d JetStream API requests (e.g. %v), %d presence syncs", jsAPI.Load(), other.Load(), syncs.Load())
	}
	// Periodic reads (the epoch refresh every 5 s among them) came at 4
	// in 6.5 s under -race on a loaded machine, before this test's
	// subject changed too; one per join would be 200.
	if counted := time.Since(counting); infos.Load() > int64(counted/time.Second)+2 {
		t.Fatalf("%d stream info requests in %v: more than the periodic epoch refresh", infos.Load(), counted)
	}
	// One diff per 50 ms flush at most (plus slack), however many joins.
	if max := int64(took/(50*time.Millisecond)) + 10; diffs.Load() > max {
		t.Fatalf("%d presence diffs for %d joins in %v (over one per flush)", diffs.Load(), n, took)
	}
}
