package e2e

import (
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/internal/app"
)

// BenchmarkIdleConnHeapRooms is BenchmarkIdleConnHeap for presence rooms
// under the member cap: 2,000 connections over 20 `room:` channels, 100
// members each (the shape of `fabric bench idle --topic room:idle-%d`
// with 10,000 connections over 100 channels). Every join sends the joiner
// the room's list and every member a diff, so alloc-B/conn includes the
// join-time presence traffic.
func BenchmarkIdleConnHeapRooms(b *testing.B) {
	const n, chans = 2000, 20
	for range b.N {
		a, err := app.Start(app.Config{
			Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "off",
			DataDir: b.TempDir(), LeaveGrace: 50 * time.Millisecond,
		})
		if err != nil {
			b.Fatal(err)
		}
		addr, err := net.ResolveTCPAddr("tcp", a.HTTPAddr())
		if err != nil {
			b.Fatal(err)
		}
		warm := rawJoin(b, addr, "room:idle-warm", "")
		before := heapAfterGC()
		var total0, total1 runtime.MemStats
		runtime.ReadMemStats(&total0)
		fds := make([]int, 0, n)
		for i := range n {
			fds = append(fds, rawJoin(b, addr, "room:idle-"+strconv.Itoa(i%chans), ""))
		}
		time.Sleep(200 * time.Millisecond) // the last presence flush
		runtime.ReadMemStats(&total1)
		after := heapAfterGC()
		b.ReportMetric(float64(after-before)/float64(n), "live-B/conn")
		b.ReportMetric(float64(total1.TotalAlloc-total0.TotalAlloc)/float64(n), "alloc-B/conn")
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(warm)
		a.Shutdown(b.Context())
	}
}

// BenchmarkIdleConnHeapSettled is BenchmarkIdleConnHeap measured once the
// joins settled: 3 s after the last one, when the presence tracker has
// sent every state and count (a capped room's last count may wait a
// second) and let go of the scratch space its flushes reuse while members
// change (released after a second without anything to send). That
// space is sized by the biggest room's latest flush, not by the number
// of connections, so it weighs per connection in a 2,000-connection
// measurement taken mid-storm and hardly at all at 15,000; this is what an
// idle gateway keeps per connection.
func BenchmarkIdleConnHeapSettled(b *testing.B) {
	for _, tc := range []struct{ name, topic string }{
		{"ephemeral", "bench:idle"},
		{"room", "room:idle"},
		{"spread", "bench:idle-"},
		{"room-spread", "room:idle-"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 2000
			for range b.N {
				settledHeap(b, n, tc.topic)
			}
		})
	}
}

// settledHeap joins n raw connections to topic (topic + i when it ends
// with '-') and reports the live heap per connection once they settled.
func settledHeap(b *testing.B, n int, topic string) {
	a, err := app.Start(app.Config{
		Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "off",
		DataDir: b.TempDir(), LeaveGrace: 50 * time.Millisecond,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(b.Context())
	addr, err := net.ResolveTCPAddr("tcp", a.HTTPAddr())
	if err != nil {
		b.Fatal(err)
	}
	name := func(i int) string {
		if topic[len(topic)-1] == '-' {
			return topic + strconv.Itoa(i)
		}
		return topic
	}
	warm := rawJoin(b, addr, name(-1), "")
	time.Sleep(1500 * time.Millisecond)
	before := heapAfterGC()
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(warm)
	}()
	for i := range n {
		fds = append(fds, rawJoin(b, addr, name(i), ""))
	}
	time.Sleep(3 * time.Second)
	b.ReportMetric(float64(heapAfterGC()-before)/float64(n), "live-B/conn")
	saveHeapProfile(b)
}
