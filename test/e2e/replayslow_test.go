package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// A resume's replay goes through the connection's queue like any other
// output, so the slow-consumer limit covers it: a client that missed
// 3,000 messages (6 MB, more than the kernel's socket buffers hold) and
// reads nothing is cut with 4008 instead of having its history pile up in
// the gateway, the replay stops (the transport's drained notification
// fires when the connection closes), and the channel keeps its other
// member.
func TestReplayToStuckClientIsCut(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.MaxQueueBytes = 64 << 10 })
	live := f.dial(phoenix.V2, phxclient.Options{})
	head := joinPos(t, live, "room:stuck", nil)
	const missed = 3000
	body := []byte(`{"pad":"` + strings.Repeat("x", 2000) + `"}`)
	for range missed {
		f.publish("fabric.room.stuck", "m", body)
	}
	nextN(t, live, "room:stuck", "m", missed) // all stored and live

	slow := f.dial(phoenix.V2, phxclient.Options{ReadBuffer: 4096, NoRead: true})
	if _, err := slow.Join("room:stuck", map[string]any{"epoch": head.Epoch, "offset": head.Offset}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the stuck client closed with 4008", func() bool {
		return f.Gateway().Stats().Transport.Closes[4008] == 1
	})
	eventually(t, wait, "only the live member left", func() bool { return f.Gateway().Members("room:stuck") == 1 })
	replayed := f.Gateway().Stats().Hub.Replayed
	if replayed == 0 || replayed >= missed {
		t.Fatalf("replayed %d of %d messages to a client that read nothing: want some, not all", replayed, missed)
	}
}
