package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// Presence traffic alone (no publish at all) to a member that never reads
// goes through the connection's output budget like any frame: its queue of
// presence_diff messages passes --max-queue-bytes and it is cut with 4008,
// while a member that reads keeps the whole list.
func TestPresenceDiffsCountAgainstTheOutputBudget(t *testing.T) {
	const rooms, churners = 30, 100
	f := startFabric(t, func(c *app.Config) { c.MaxQueueBytes = 256 << 10 })
	topic := func(i int) string { return fmt.Sprintf("room:pslow-%d", i) }
	slow := f.dial(phoenix.V2, phxclient.Options{ReadBuffer: 4096, NoRead: true})
	reader := f.dial(phoenix.V2, phxclient.Options{})
	for i := range rooms {
		if _, err := slow.Join(topic(i), map[string]any{"user": "slow"}); err != nil {
			t.Fatal(err)
		}
	}
	if s, _, err := reader.JoinWait(topic(0), map[string]any{"user": "reader"}, wait); s != "ok" || err != nil {
		t.Fatalf("reader join: %s %v", s, err)
	}
	eventually(t, wait, "slow member in every room", func() bool { return f.Gateway().Members(topic(rooms-1)) == 1 })
	// Every visit below comes after the reader sees the silent member: in
	// its presence_state, or in a diff right after it when the silent
	// member's join (sent unanswered, first) was tracked after the
	// reader's state went out.
	for seen := false; !seen; {
		m, err := reader.NextMatch(wait, func(m phxclient.Msg) bool {
			return m.Event == presence.EventState || m.Event == presence.EventDiff
		})
		if err != nil {
			t.Fatalf("the reader never saw the silent member: %v", err)
		}
		seen = strings.Contains(string(m.Payload), `"slow"`)
	}

	// 100 members join each room with a 900-byte meta and leave it again:
	// a presence_diff of about 2 KB per visit to every member, 6 MB to
	// the silent one: far over its 256 KiB budget and what the kernel
	// buffers on loopback. (One visit per connection and room: a re-join
	// would be rate limited.)
	meta := map[string]any{"pad": strings.Repeat("p", 900)}
	var wg sync.WaitGroup
	errs := make(chan error, churners)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < churners; i += 4 {
				c := f.dial(phoenix.V2, phxclient.Options{})
				go drain(c)
				for r := range rooms {
					ref, err := c.Join(topic(r), map[string]any{"user": fmt.Sprintf("u%d", i), "meta": meta})
					if err == nil {
						err = c.Send(phoenix.R(ref), phoenix.R(c.NextRef()), topic(r), "phx_leave", map[string]any{})
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the silent member closed with 4008", func() bool {
		return f.Gateway().Stats().Transport.Closes[4008] == 1
	})
	// The reader saw every visitor come and go, and the silent member
	// leave with its connection: the list is itself.
	joined := map[string]bool{}
	keys := map[string]bool{"reader": true, "slow": true}
	eventually(t, 30*time.Second, "the reader's list", func() bool {
		for {
			m, err := reader.NextMatch(100*time.Millisecond, func(m phxclient.Msg) bool { return m.Event == presence.EventDiff })
			if err != nil {
				break
			}
			var d struct{ Joins, Leaves map[string]json.RawMessage }
			if err := json.Unmarshal(m.Payload, &d); err != nil {
				t.Fatalf("diff %s: %v", m.Payload, err)
			}
			for k := range d.Joins {
				keys[k], joined[k] = true, true
			}
			for k := range d.Leaves {
				delete(keys, k)
			}
		}
		return len(joined) == churners && len(keys) == 1 && keys["reader"] && f.Gateway().Members(topic(0)) == 1
	})
	if n := f.Gateway().Stats().Transport.Closes[4008]; n != 1 {
		t.Fatalf("%d connections cut as slow consumers, want only the silent one", n)
	}
}

// drain reads c until it closes.
func drain(c *phxclient.Client) {
	for {
		if _, err := c.Next(time.Minute); err != nil {
			return
		}
	}
}
