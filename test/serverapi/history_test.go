package serverapi

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

// History pages through 100,000 stored messages (another topic's
// interleaved) with a bounded page size, and returns exactly the messages
// a JetStream consumer of the topic's subject reads: same offsets, same
// payloads, same order, each chained to the one before. The test command
// runs it with 10,000 (100,000 take over a minute to publish under -race);
// `task history-100k` (FABRIC_HISTORY_100K=1) runs the full count.
func TestHistory100k(t *testing.T) {
	n := 10_000
	if os.Getenv("FABRIC_HISTORY_100K") == "1" {
		n = 100_000
	}
	// A namespace without a per-channel cap (room:* keeps 10,000).
	a := start(t, false, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"log": {History: true, MaxAge: time.Hour}}
	})
	nc := testkit.Connect(t, a.NATSURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	var last jetstream.PubAckFuture
	for i := 0; i < n; i++ {
		m := nats.NewMsg("fabric.log.big")
		m.Header.Set("Fabric-Event", "e")
		m.Data = fmt.Appendf(nil, `{"i":%d}`, i)
		if last, err = js.PublishMsgAsync(m, jetstream.WithStallWait(wait)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if _, err := js.PublishAsync("fabric.log.noise", []byte(`{}`), jetstream.WithStallWait(wait)); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishes not acknowledged")
	}
	select {
	case <-last.Ok():
	case err := <-last.Err():
		t.Fatal(err)
	}
	t.Logf("published %d messages in %s", n, time.Since(began).Round(time.Millisecond))

	// The reference: a JetStream pull consumer of the topic's subject.
	began = time.Now()
	cons, err := js.CreateConsumer(ctx, "FABRIC_log", jetstream.ConsumerConfig{FilterSubject: "fabric.log.big",
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, 0, n)
	wantData := make(map[uint64]string, n)
	for len(want) < n {
		batch, err := cons.Fetch(5000, jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			md, _ := m.Metadata()
			want = append(want, md.Sequence.Stream)
			wantData[md.Sequence.Stream] = string(m.Data())
			got++
		}
		if batch.Error() != nil || got == 0 {
			t.Fatalf("consumer after %d: %v", len(want), batch.Error())
		}
	}
	t.Logf("consumer read %d in %s", len(want), time.Since(began).Round(time.Millisecond))

	c := fabricv1connect.NewServerAPIClient(http.DefaultClient, apiURL(a))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	began = time.Now()
	since := &fabricv1.Position{}
	var prev uint64
	i, pages, biggest := 0, 0, 0
	for done := false; !done; pages++ {
		if pages > n/1000+1 {
			t.Fatalf("more than %d pages", pages)
		}
		res, err := c.History(ctx, req(&fabricv1.HistoryRequest{Topic: "log:big", Since: since, Limit: 1000}, keyOps))
		// Unavailable is the answer to retry: on a loaded machine the
		// gateway's link probe can miss its deadline and mark NATS down
		// for a moment (seen under -race).
		for try := 0; connect.CodeOf(err) == connect.CodeUnavailable && try < 40; try++ {
			time.Sleep(250 * time.Millisecond)
			res, err = c.History(ctx, req(&fabricv1.HistoryRequest{Topic: "log:big", Since: since, Limit: 1000}, keyOps))
		}
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		h := res.Msg
		if !h.GetRecovered() {
			t.Fatalf("page %d: not recovered: %s", pages, h.GetReason())
		}
		biggest = max(biggest, proto.Size(h))
		if len(h.GetMessages()) > 1000 {
			t.Fatalf("page %d: %d messages over the limit", pages, len(h.GetMessages()))
		}
		for _, m := range h.GetMessages() {
			if i >= n || m.GetOffset() != want[i] || string(m.GetPayload()) != wantData[want[i]] || m.GetPrev() != prev {
				t.Fatalf("message %d: offset %d prev %d %s; the consumer read offset %d after %d", i, m.GetOffset(), m.GetPrev(), m.GetPayload(), want[min(i, n-1)], prev)
			}
			prev = m.GetOffset()
			i++
		}
		since, done = h.GetNext(), h.GetDone()
		if pages%20 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if i != n {
		t.Fatalf("History returned %d messages, the consumer %d", i, n)
	}
	t.Logf("History: %d messages in %d pages in %s; largest page %d bytes; heap in use %d MiB before, peak %d MiB while paging",
		i, pages, time.Since(began).Round(time.Millisecond), biggest, base>>20, peak>>20)
	// Bounded: a page is at most the limit, and what a page holds is
	// bounded in bytes too (the Direct Get batch's 1 MiB).
	if biggest > 2<<20 {
		t.Fatalf("a page of %d bytes", biggest)
	}
	// The latest 20, backwards from the end, are the consumer's last 20.
	res, err := c.History(ctx, req(&fabricv1.HistoryRequest{Topic: "log:big", Limit: 20}, keyOps))
	if err != nil {
		t.Fatal(err)
	}
	for j, m := range res.Msg.GetMessages() {
		if m.GetOffset() != want[n-20+j] {
			t.Fatalf("latest 20: message %d at %d, want %d", j, m.GetOffset(), want[n-20+j])
		}
	}
	if len(res.Msg.GetMessages()) != 20 {
		t.Fatalf("latest 20: %d", len(res.Msg.GetMessages()))
	}
}
