package natsbroker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// Latest returns exactly the topic's last n messages, oldest first, chained
// by Prev, while another topic's messages are interleaved in the stream.
func TestLatest(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{MaxAge: time.Hour})
	var mine []uint64
	for i := 0; i < 50; i++ {
		mine = append(mine, e.jsPublish(t, "fabric.room.a", "m", fmt.Sprintf(`{"i":%d}`, i)))
		for j := 0; j < i%3; j++ {
			e.jsPublish(t, "fabric.room.b", "m", `{}`)
		}
	}
	for _, n := range []int{1, 7, 49, 50, 80} {
		page, epoch, err := e.b.Latest(ctx(t), "room:a", n)
		if err != nil {
			t.Fatal(err)
		}
		if epoch == "" || epoch != e.epoch(t) {
			t.Fatalf("n=%d: epoch %q, stream has %q", n, epoch, e.epoch(t))
		}
		want := mine[max(0, len(mine)-n):]
		if len(page.Messages) != len(want) || !page.Done {
			t.Fatalf("n=%d: %d messages (done %v), want %d", n, len(page.Messages), page.Done, len(want))
		}
		for i, m := range page.Messages {
			if m.Offset != want[i] {
				t.Fatalf("n=%d: message %d at %d, want %d", n, i, m.Offset, want[i])
			}
			var prev uint64
			if k := len(mine) - len(want) + i; k > 0 {
				prev = mine[k-1]
			}
			if m.Prev != prev {
				t.Fatalf("n=%d: message %d prev %d, want %d", n, i, m.Prev, prev)
			}
		}
		if got, wantBody := string(page.Messages[len(page.Messages)-1].Payload), `{"i":49}`; got != wantBody {
			t.Fatalf("last payload %s, want %s", got, wantBody)
		}
	}
	page, _, err := e.b.Latest(ctx(t), "room:empty", 10)
	if err != nil || len(page.Messages) != 0 || !page.Done {
		t.Fatalf("empty topic: %+v %v", page, err)
	}
	if _, _, err := e.b.Latest(ctx(t), "chat:x", 10); err == nil {
		t.Fatal("a topic without history: no error")
	}
}
