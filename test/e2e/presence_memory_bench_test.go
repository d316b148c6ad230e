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
