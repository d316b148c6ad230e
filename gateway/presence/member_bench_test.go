package presence

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// nullConn takes every message and keeps none (an idle client that reads
// what it is sent).
type nullConn struct{ sent int }

func (c *nullConn) Send(*transport.Message) bool      { c.sent++; return true }
func (c *nullConn) Close(transport.CloseCode, string) {}
func (c *nullConn) RemoteAddr() string                { return "null" }
func (c *nullConn) Backlog() int                      { return 0 }
func (c *nullConn) Drained(int) <-chan struct{}       { return transport.Now() }

// BenchmarkMemberHeap tracks members as the idle benchmarks join them
// (anonymous connections, no app meta, flushed every 100 joins as a join
// storm's 50 ms batches would be) and reports what the tracker keeps per
// member once they settled (live-B/member, after GC) and what their joins
// allocated in all, states and diffs included (alloc-B/member): the
// garbage the heap must make room for during the joins.
func BenchmarkMemberHeap(b *testing.B) {
	for _, tc := range []struct {
		name     string
		n, chans int
	}{
		{"100ch", 10000, 100},   // 100 members a channel: under the member cap, lists and diffs
		{"1ch", 15000, 1},       // over the cap: counts
		{"1each", 10000, 10000}, // one channel per user: a channel's only member
	} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				memberHeap(b, tc.n, tc.chans)
			}
		})
	}
}

// rooms15s tracks presence on room:* with the default 15 s TTL.
var rooms15s = namespace.MustNew(map[string]namespace.Namespace{"room": {Presence: true}})

func memberHeap(b *testing.B, n, chans int) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	bus := &fakeBus{n: newNet(), name: "gw1"}
	tr := New(Config{Bus: bus, Namespaces: rooms15s, GatewayID: "gw1", manual: true, now: c.now})
	defer tr.Close()
	topics := make([]string, chans)
	for i := range topics {
		topics[i] = "room:idle-" + strconv.Itoa(i)
	}
	// What the session holds anyway (its connection, id, channel
	// instance and join params) is made before the measurement; the
	// instances are Instances, as the session's are.
	insts := make([]*benchInst, n)
	for i := range insts {
		// The session's ids: a process prefix and a number; the
		// session makes the string for the join (garbage once tracked).
		insts[i] = &benchInst{m: Member{Conn: &nullConn{}, Version: phoenix.V2, JoinRef: phoenix.R("1"),
			Params: []byte("{}")}, prefix: "0123456789abcdef-", n: uint64(i + 1)}
	}
	before := heapAfterGC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for i, in := range insts {
		m := in.m
		m.ConnID = in.prefix + strconv.FormatUint(in.n, 36) // as Session.ID makes it
		tr.Track(topics[i%chans], in, m)
		if i%100 == 99 {
			tr.bg.Wait() // the first join's subscribe and sync (synchronous bus)
			tr.flush()
			c.add(tr.cfg.Flush)
		}
	}
	tr.bg.Wait()
	tr.flush()
	runtime.ReadMemStats(&m1)
	if rs, ok := any(tr).(interface{ releaseScratch() }); ok {
		rs.releaseScratch() // as the loop does once flushes find nothing
	}
	after := heapAfterGC()
	b.ReportMetric(float64(after-before)/float64(n), "live-B/member")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "alloc-B/member")
	runtime.KeepAlive(insts)
}

// benchInst is a channel instance as the session's: it gives its
// connection and join_ref on demand (Instance).
type benchInst struct {
	m      Member
	prefix string
	n      uint64
}

func (b *benchInst) PresenceConn() transport.Conn     { return b.m.Conn }
func (b *benchInst) PresenceJoinRef() phoenix.Ref     { return b.m.JoinRef }
func (b *benchInst) PresenceConnID() (string, uint64) { return b.prefix, b.n }

func heapAfterGC() int64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// BenchmarkDistinctKeys is what counting a capped room's keys costs (once
// per flush with joiners, and once per CountInterval, while members
// change): 15,000 members.
func BenchmarkDistinctKeys(b *testing.B) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	tr := New(Config{Bus: &fakeBus{n: newNet(), name: "gw1"}, Namespaces: rooms15s, GatewayID: "gw1", manual: true, now: c.now})
	defer tr.Close()
	for i := range 15000 {
		tr.Track("room:k", i, Member{Conn: &nullConn{}, Version: phoenix.V2, JoinRef: phoenix.R("1"), ConnID: fmt.Sprintf("c%015x", i)})
	}
	tr.bg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	ch := tr.channel("room:k")
	b.ResetTimer()
	for range b.N {
		if tr.distinctKeys(ch) != 15000 {
			b.Fatal("miscounted")
		}
	}
}
