package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// A moderator clears a channel on a 3-node cluster with a gateway on each
// node and a Go client on each gateway: every gateway resets the channel
// and its client rejoins, told history_cleared. The time from the clear's
// acknowledgement to each gateway's answer is logged (the documented bound
// is a second).
func TestClearReachesEveryGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster")
	}
	nodes := startCluster(t, 3)
	gws := make([]*app.App, 3)
	for i := range nodes {
		gws[i] = startGateway(t, urlsFrom(nodes, i))
		listen(t, gws[i])
	}
	nc, err := nats.Connect(urlsFrom(nodes, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	mod, err := natsbroker.NewModerator(nc, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	if err := mod.ClearChannel(ctx, "room:x"); err != nil {
		t.Fatal(err)
	}
	acked := time.Since(start)
	// Applied: the gateway dropped the channel's members (and ring),
	// which then rejoin and are told.
	applied := make([]time.Duration, len(gws))
	told := make([]time.Duration, len(gws))
	deadline := time.Now().Add(wait)
	for done := 0; done < len(gws); {
		if time.Now().After(deadline) {
			t.Fatalf("not every gateway applied the clear: applied %v, told %v", applied, told)
		}
		for i, g := range gws {
			cleared := g.Gateway().Stats().Hub.Resumes[broker.ReasonHistoryCleared] > 0
			if applied[i] == 0 && (g.Gateway().Members("room:x") == 0 || cleared) {
				applied[i] = time.Since(start)
			}
			if told[i] == 0 && cleared {
				told[i] = time.Since(start)
				done++
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("clear acknowledged after %v; applied on each gateway after %v; each gateway's client told history_cleared (after its rejoin back-off) after %v", acked, applied, told)
}
