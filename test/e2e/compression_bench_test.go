package e2e

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/internal/app"
)

// BenchmarkIdleConnHeapCompression is BenchmarkIdleConnHeap's room case
// with --compression off and on (clients offering permessage-deflate as
// browsers do): the Go heap an idle joined connection keeps. Compression
// keeps no per-connection state, so both should read the same.
func BenchmarkIdleConnHeapCompression(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("compression=%v", on), func(b *testing.B) {
			const n = 2000
			for range b.N {
				idleHeapCompression(b, n, on)
			}
		})
	}
}

func idleHeapCompression(b *testing.B, n int, on bool) {
	a, err := app.Start(app.Config{
		Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "off",
		DataDir: b.TempDir(), LeaveGrace: 50 * time.Millisecond,
		Compression: on, CompressionThreshold: 256,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(b.Context())
	addr, err := net.ResolveTCPAddr("tcp", a.HTTPAddr())
	if err != nil {
		b.Fatal(err)
	}
	header := ""
	if on {
		header = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	warm := rawJoinWith(b, addr, "room:idle", "", header)
	before := heapAfterGC()
	var total0, total1 runtime.MemStats
	runtime.ReadMemStats(&total0)
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(warm)
	}()
	for range n {
		fds = append(fds, rawJoinWith(b, addr, "room:idle", "", header))
	}
	runtime.ReadMemStats(&total1)
	after := heapAfterGC()
	b.ReportMetric(float64(after-before)/float64(n), "live-B/conn")
	b.ReportMetric(float64(total1.TotalAlloc-total0.TotalAlloc)/float64(n), "alloc-B/conn")
}
