package hub_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// countConn is a transport.Conn whose Send only counts: no queue, no I/O,
// so the benchmark measures the hub's fan-out alone.
type countConn struct{ n atomic.Int64 }

func (c *countConn) Send(*transport.Message) bool      { c.n.Add(1); return true }
func (c *countConn) Close(transport.CloseCode, string) {}
func (c *countConn) RemoteAddr() string                { return "count" }

func (c *countConn) Backlog() int { return 0 }

func (c *countConn) Drained(int) <-chan struct{} { return transport.Now() }

// fanoutHub returns a broker whose topic "bench" has v2 V2 members and v1
// V1 members in a hub, and the members' conns.
func fanoutHub(tb testing.TB, v2, v1 int) (*memory.Broker, []*countConn) {
	tb.Helper()
	b := memory.New()
	h := hub.New(hub.Config{Broker: b, LeaveGrace: time.Hour})
	tb.Cleanup(h.Close)
	conns := make([]*countConn, 0, v2+v1)
	for i := range v2 + v1 {
		v := phoenix.V2
		if i >= v2 {
			v = phoenix.V1
		}
		c := &countConn{}
		conns = append(conns, c)
		if err := h.Join(context.Background(), "bench", hub.Member{Conn: c, Version: v, Key: c}); err != nil {
			tb.Fatal(err)
		}
	}
	return b, conns
}

// BenchmarkFanout measures one broker message handed to every member.
// Delivery is synchronous (memory.Broker.Deliver drives the hub's handler on
// this goroutine), so when Deliver returns every member has the message and
// all the work is inside the timed region.
func BenchmarkFanout(b *testing.B) {
	for _, members := range []int{10, 1000, 10000} {
		b.Run("members="+strconv.Itoa(members), func(b *testing.B) {
			br, conns := fanoutHub(b, members, 0)
			msg := &broker.Message{Topic: "bench", Event: "news", Payload: []byte(`{"body":"hello, world","n":12345}`)}
			b.ReportAllocs()
			for b.Loop() {
				if br.Deliver(msg) != 1 {
					b.Fatal("hub is not subscribed")
				}
			}
			var total int64
			for _, c := range conns {
				total += c.n.Load()
			}
			if want := int64(b.N) * int64(members); total != want {
				b.Fatalf("delivered %d, want %d", total, want)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*int64(members)), "ns/delivery")
		})
	}
}

// TestFanoutAllocs guards encode-once: allocations per message depend on
// the number of protocol variants, not on the number of members.
func TestFanoutAllocs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		msg    broker.Message
		v2, v1 int
		frames int // distinct frames the hub builds
	}{
		{"v2 text", broker.Message{Topic: "bench", Event: "e", Payload: []byte(`{"n":1}`)}, 1, 0, 1},
		{"mixed text", broker.Message{Topic: "bench", Event: "e", Payload: []byte(`{"n":1}`)}, 1, 1, 2},
		{"mixed binary offset", broker.Message{Topic: "bench", Event: "e", Payload: []byte{1, 2, 3}, Binary: true, Offset: 9}, 1, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocs := func(scale int) float64 {
				br, _ := fanoutHub(t, tc.v2*scale, tc.v1*scale)
				msg := tc.msg
				return testing.AllocsPerRun(100, func() { br.Deliver(&msg) })
			}
			n := tc.v1 + tc.v2
			small, large := allocs(1), allocs(1000)
			t.Logf("allocs per message: %v with %d members, %v with %d members", small, n, large, 1000*n)
			if large > small {
				t.Fatalf("allocs per message grow with members: %v with %d members, %v with %d", small, n, large, 1000*n)
			}
			// A loose absolute cap catches a regression that is flat in
			// members but not in frames (e.g. re-encoding per member kind).
			if limit := float64(2 + 8*tc.frames); large > limit {
				t.Fatalf("%v allocs per message, want at most %v", large, limit)
			}
		})
	}
}
