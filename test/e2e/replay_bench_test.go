package e2e

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// replayNamespaces: room:* keeps history, as the benchmark's broker does.
var replayNamespaces = namespace.MustNew(map[string]namespace.Namespace{"room": {History: true}})

// countConn is a connection that only counts what it is sent: the replay
// benchmarks measure fetching, chaining, encoding and handing frames to
// connections, not the kernel's socket writes.
type countConn struct {
	msgs  atomic.Int64
	bytes atomic.Int64
}

func (c *countConn) Send(m *transport.Message) bool {
	c.msgs.Add(1)
	c.bytes.Add(int64(len(m.Data)))
	return true
}
func (c *countConn) Close(transport.CloseCode, string) {}
func (c *countConn) RemoteAddr() string                { return "bench" }
func (c *countConn) Backlog() int                      { return 0 }
func (c *countConn) Drained(int) <-chan struct{}       { return transport.Now() }

type replayEnv struct {
	b     *natsbroker.Broker
	epoch string
	offs  []uint64 // offsets of the published messages, in order
}

func setupReplay(b *testing.B, topic string, n int) *replayEnv {
	b.Helper()
	s := natstest.RunServer(b)
	nc := natstest.Connect(b, s)
	br, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {}}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := br.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	pub := natstest.Connect(b, s)
	js, _ := jetstream.New(pub)
	subj := "fabric.room." + topic[len("room:"):]
	env := &replayEnv{b: br}
	// Asynchronous JetStream publishes in windows: fast, and every
	// message acknowledged (stored) before the benchmark starts.
	const window = 512
	for i := 0; i < n; i += window {
		var futs []jetstream.PubAckFuture
		for j := i; j < min(n, i+window); j++ {
			m := nats.NewMsg(subj)
			m.Header.Set("Fabric-Event", "m")
			m.Data = fmt.Appendf(nil, `{"i":%d,"pad":"0123456789012345678901234567890123456789"}`, j)
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case ack := <-f.Ok():
				env.offs = append(env.offs, ack.Sequence)
			case err := <-f.Err():
				b.Fatal(err)
			case <-time.After(30 * time.Second):
				b.Fatal("publish ack timeout")
			}
		}
	}
	st, _ := js.Stream(ctx, "FABRIC_room")
	env.epoch = st.CachedInfo().Config.Metadata["fabric_epoch"]
	return env
}

// resumeAll resumes clients members of topic from offset and waits until
// each received want messages.
func resumeAll(b *testing.B, h *hub.Hub, topic string, from broker.Position, clients, want int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256) // joins in flight, like a reconnect wave through a few gateways' workers
	conns := make([]*countConn, clients)
	for i := range conns {
		conns[i] = &countConn{}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pos := from
			m := hub.Member{Conn: conns[i], Version: phoenix.V2, Key: conns[i], Resume: &pos}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := h.Join(ctx, topic, m); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, c := range conns {
		if got := c.msgs.Load(); got != int64(want) {
			b.Fatalf("client %d got %d messages, want %d", i, got, want)
		}
	}
}

// BenchmarkReplay measures resuming from history at the hub: a reconnect
// wave (10,000 clients each missing 100 messages) with the per-channel ring
// sharing one fetch, against the same wave forced through one Direct Get
// per client (ring of 1) — the ratio between the two is the point; and one
// client missing 100,000 messages, paged.
func BenchmarkReplay(b *testing.B) {
	b.Run("wave/clients=10000/missed=100/ring", func(b *testing.B) { benchWave(b, 10000, 1024) })
	b.Run("wave/clients=10000/missed=100/no-ring", func(b *testing.B) { benchWave(b, 10000, 1) })
	b.Run("one/missed=100000", func(b *testing.B) {
		const n = 100000
		env := setupReplay(b, "room:long", n)
		b.ResetTimer()
		var ms runtime.MemStats
		var peak uint64
		for i := 0; i < b.N; i++ {
			h := hub.New(hub.Config{Broker: env.b, Namespaces: replayNamespaces, LeaveGrace: time.Millisecond})
			done := make(chan struct{})
			go func() { // sample the heap while the replay runs
				t := time.NewTicker(5 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-done:
						return
					case <-t.C:
						runtime.ReadMemStats(&ms)
						peak = max(peak, ms.HeapInuse)
					}
				}
			}()
			resumeAll(b, h, "room:long", broker.Position{Epoch: env.epoch, Offset: 0}, 1, n)
			close(done)
			h.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/msg")
		b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	})
}

func benchWave(b *testing.B, clients, ringSize int) {
	const missed = 100
	env := setupReplay(b, "room:wave", 2*missed)
	from := broker.Position{Epoch: env.epoch, Offset: env.offs[missed-1]}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A fresh hub is a freshly restarted gateway: empty rings.
		h := hub.New(hub.Config{Broker: env.b, Namespaces: replayNamespaces, RingSize: ringSize, LeaveGrace: time.Millisecond})
		resumeAll(b, h, "room:wave", from, clients, missed)
		h.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*clients), "ns/client")
}
