package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// metricValue reads one sample ("name" or "name{labels}") from /metrics;
// -1 when absent.
func metricValue(t *testing.T, f *fabric, sample string) float64 {
	t.Helper()
	r, err := http.Get("http://" + f.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return n
		}
	}
	return -1
}

// Presence state goes through the connection's queue like every other
// frame, so it counts against the process's output budget: joiners that
// read nothing, each sent the presence_state of two rooms of 100 members
// (~90 KB each, one shared encoding per room), go over --max-output-bytes
// together while each stays far under its own --max-queue-bytes; the
// gateway cuts them (4008, fabric_output_budget_cuts_total), and the count
// is back to zero once everyone has gone.
func TestOutputBudgetCutsPresenceStateToStalledJoiners(t *testing.T) {
	const (
		rooms    = 2
		members  = 100
		stalled  = 16
		limit    = 768 << 10
		perQueue = 8 << 20
	)
	f := startFabric(t, func(c *app.Config) {
		c.MaxOutputBytes = limit
		c.MaxQueueBytes = perQueue   // only the process's budget cuts here
		c.WriteTimeout = time.Minute // and not the write timeout either
		c.SendBuffer = 16 << 10      // small kernel buffers: output queues in the gateway
		c.MaxChannels = rooms + 1    // (default 100; just what is used)
	})
	topic := func(i int) string { return fmt.Sprintf("room:budget%d", i) }
	meta := map[string]any{"meta": map[string]any{"n": strings.Repeat("x", 800)}}

	start := time.Now()
	var readers []*phxclient.Client
	// One member at a time: a storm of 100 joiners at once, each queued
	// a ~90 KB state behind a 16 KiB socket buffer, would itself go over
	// this test's small budget (docs/limits.md: size it for a join storm).
	for range members {
		// A large receive buffer: a reader the test's goroutines delay
		// (a loaded machine, the race detector) is still a reader, its
		// kernel takes what it has not read yet. With 16 KiB server
		// buffers and the default receive window, such a lag queues in
		// the gateway, and the budget would rightly cut the laggard.
		c := f.dial(phoenix.V2, phxclient.Options{ReadBuffer: 4 << 20})
		readers = append(readers, c)
		for r := range rooms {
			if st, resp, err := c.JoinWait(topic(r), meta, 30*time.Second); err != nil || st != "ok" {
				t.Fatalf("member join %s: %s %s %v", topic(r), st, resp, err)
			}
		}
	}
	// The state a joiner gets: under the state cap, so the whole list.
	probe := f.dial(phoenix.V2, phxclient.Options{})
	if st, _, err := probe.JoinWait(topic(0), nil, 30*time.Second); err != nil || st != "ok" {
		t.Fatalf("probe join: %s %v", st, err)
	}
	m, err := probe.NextMatch(30*time.Second, func(m phxclient.Msg) bool { return m.Event == presence.EventState })
	if err != nil {
		t.Fatalf("probe's presence_state: %v", err)
	}
	if len(m.Payload) < 64<<10 {
		t.Fatalf("presence_state of %d bytes: want a large one (100 metas of ~900 bytes)", len(m.Payload))
	}
	t.Logf("%v: presence_state: %d bytes; %d stalled joiners × %d rooms", time.Since(start), len(m.Payload), stalled, rooms)

	// Joiners that never read: each is queued rooms × ~90 KB of state
	// (plus the diffs of the others' joins), far under its own 8 MiB
	// bound; together over the 768 KiB budget.
	var stuck []*phxclient.Client
	for range stalled {
		c := f.dial(phoenix.V2, phxclient.Options{NoRead: true, ReadBuffer: 4096})
		stuck = append(stuck, c)
		for r := range rooms {
			if _, err := c.Join(topic(r), nil); err != nil {
				t.Fatalf("stalled join: %v", err)
			}
		}
	}
	eventually(t, 30*time.Second, "a cut by the output budget", func() bool {
		return metricValue(t, f, "fabric_output_budget_cuts_total") >= 1
	})
	eventually(t, 30*time.Second, "the cut connections closed with 4008", func() bool {
		return f.Gateway().Stats().Transport.Closes[4008] >= 1
	})
	t.Logf("%v: cut", time.Since(start))
	if q := metricValue(t, f, "fabric_output_queued_bytes"); q < 0 || q > 2*limit {
		t.Fatalf("fabric_output_queued_bytes = %v, limit %d", q, limit)
	}

	// That a reading client keeps its messages meanwhile is shown with
	// paced readers (gateway/transport/ws, test/attack): here, under the
	// race detector on a loaded machine, a member whose reader is
	// descheduled holds tens of KiB behind a 16 KiB socket buffer, and
	// for the budget that is a slow client like any other.
	// All gone: nothing counted any more.
	for _, c := range append(append(readers, probe), stuck...) {
		c.Close()
	}
	eventually(t, 30*time.Second, "no WebSocket left", func() bool {
		return f.Gateway().Stats().Transport.Open == 0
	})
	if q := metricValue(t, f, "fabric_output_queued_bytes"); q != 0 {
		t.Fatalf("fabric_output_queued_bytes = %v after every connection closed", q)
	}
}
