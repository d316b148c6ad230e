package ws_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// gameState is a Phoenix v2 broadcast of at most size bytes (and at least
// its frame around an empty list) carrying what a
// game sends: player records with varying numbers (seeded, so runs agree).
func gameState(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var b strings.Builder
	b.WriteString(`[null,"41","room:match","state",{"tick":`)
	fmt.Fprintf(&b, "%d", r.IntN(1e6))
	b.WriteString(`,"players":[`)
	for i := 0; ; i++ {
		rec := fmt.Sprintf(`{"id":"p%d","x":%.2f,"y":%.2f,"hp":%d,"state":"%s"}`, i, r.Float64()*1000, r.Float64()*1000, r.IntN(101),
			[]string{"idle", "running", "jumping", "dead"}[r.IntN(4)])
		if i > 0 {
			rec = "," + rec
		}
		if b.Len()+len(rec)+4 > size {
			break
		}
		b.WriteString(rec)
	}
	b.WriteString(`]}]`)
	return []byte(b.String())
}

// BenchmarkFanoutDeflate sends broadcasts to 200 real connections through
// the epoll server, plain or with permessage-deflate, each message built
// fresh (so compressed once per message, as in production). Clients read
// the socket in 64 KiB chunks and count bytes (they do not inflate), so
// the process CPU is the server's plus a small read cost per chunk.
// Reported per delivery: wall ns, process CPU ns, bytes on the wire.
func BenchmarkFanoutDeflate(b *testing.B) {
	const conns = 200
	for _, size := range []int{512, 2048, 8192} {
		for _, mode := range []string{"plain", "deflate"} {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) {
				benchFanout(b, conns, size, mode == "deflate")
			})
		}
	}
}

func benchFanout(b *testing.B, n, size int, deflate bool) {
	srv, err := fws.New(fws.Config{Compression: true, CompressMin: 256, MaxQueueBytes: 1 << 30, WriteTimeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var sconns []transport.Conn
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = srv.Upgrade(w, r, func(c transport.Conn) transport.Session {
			mu.Lock()
			sconns = append(sconns, c)
			mu.Unlock()
			return &echo{c: c, closed: make(chan transport.CloseCode, 1)}
		})
	}))
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	}()
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	d := ws.Dialer{}
	if deflate {
		d.Extensions = []httphead.Option{wsflate.Parameters{ClientMaxWindowBits: 15}.Option()}
	}
	var bytes atomic.Int64
	var wg sync.WaitGroup
	var clients []net.Conn
	for range n {
		c, _, _, err := d.Dial(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				k, err := c.Read(buf)
				bytes.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		wg.Wait()
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		mu.Lock()
		k := len(sconns)
		mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("connections not upgraded")
		}
	}
	msgs := make([]*transport.Message, b.N)
	var want int64 // bytes every client reads
	for i := range msgs {
		msgs[i] = transport.NewText(gameState(uint64(i), size))
		want += int64(fws.WireLen(msgs[i], deflate))
	}
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for _, m := range msgs {
		for _, c := range sconns {
			c.Send(m)
		}
	}
	want *= int64(n)
	for deadline := time.Now().Add(5 * time.Minute); bytes.Load() < want; time.Sleep(100 * time.Microsecond) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d bytes delivered", bytes.Load(), want)
		}
	}
	b.StopTimer()
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	deliveries := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
	b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
	b.ReportMetric(float64(bytes.Load())/deliveries, "wire-B/delivery")
}

// BenchmarkDeflateSize compresses one game-state broadcast per size, as
// the server does once per message; it reports the plain and compressed
// frame sizes (the break-even the --compression-threshold default rests
// on) and the compression time.
func BenchmarkDeflateSize(b *testing.B) {
	for _, size := range []int{64, 96, 128, 160, 192, 256, 384, 512, 1024, 4096} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			p := gameState(1, size)
			var wire int
			for range b.N {
				wire = len(fws.DeflatedFrame(transport.NewText(p))) - 4 // the flush marker a message drops
			}
			plain := len(p) + 2
			if len(p) >= 126 {
				plain += 2
			}
			b.ReportMetric(float64(plain), "plain-B")
			b.ReportMetric(float64(wire), "deflated-B")
		})
	}
}
