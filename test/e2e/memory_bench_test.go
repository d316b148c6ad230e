package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/internal/app"
)

// BenchmarkIdleConnHeap measures the Go heap a gateway keeps per idle
// joined WebSocket connection: live bytes after a full GC, over the heap
// before the connections, divided by their number. It explains the RSS
// figure of `fabric bench idle` (which adds GC headroom and the kernel's
// share) and is the number to watch when changing per-connection state.
//
// The clients are raw blocking sockets driven with syscalls, outside Go's
// netpoller and heap, so the only heap that grows is the server's.
//
//	go test -run '^$' -bench IdleConnHeap -benchtime 1x ./test/e2e/
func BenchmarkIdleConnHeap(b *testing.B) {
	for _, tc := range []struct {
		name, topic string
		jwt         bool // each connection a user with its own token
	}{
		{"ephemeral", "bench:idle", false},     // no history, no presence
		{"room", "room:idle", false},           // default namespace: history and presence
		{"spread", "bench:idle-%d", false},     // one channel per connection
		{"room-spread", "room:idle-%d", false}, // one persistent channel per connection
		{"room-jwt", "room:idle", true},        // authenticated: policy, user budget, token identity
	} {
		b.Run(tc.name, func(b *testing.B) {
			const n = 2000
			for range b.N {
				idleHeap(b, n, tc.topic, tc.jwt)
			}
		})
	}
}

func idleHeap(b *testing.B, n int, topic string, jwt bool) {
	cfg := app.Config{
		Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "off",
		DataDir: b.TempDir(), LeaveGrace: 50 * time.Millisecond,
	}
	query := func(int) string { return "" }
	if jwt {
		cfg.JWTSecret, cfg.AllowQueryToken = testSecret, true
		query = func(i int) string {
			tok, err := auth.Mint(auth.Config{Secret: []byte(testSecret)}, auth.MintClaims{Subject: "u" + strconv.Itoa(i), Channels: []string{"bench:*", "room:*"}})
			if err != nil {
				b.Fatal(err)
			}
			return "&token=" + tok
		}
	}
	a, err := app.Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Shutdown(b.Context())
	addr, err := net.ResolveTCPAddr("tcp", a.HTTPAddr())
	if err != nil {
		b.Fatal(err)
	}
	// One throwaway connection first: lazily built state (pools, encoder
	// caches, the first channel's subscription) is not per connection.
	warm := rawJoin(b, addr, fmt.Sprintf(topic, -1), query(-1))
	before := heapAfterGC()
	var total0 runtime.MemStats
	runtime.ReadMemStats(&total0)
	fds := make([]int, 0, n)
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(warm)
	}()
	for i := range n {
		t := topic
		if bytes.Contains([]byte(topic), []byte("%d")) {
			t = fmt.Sprintf(topic, i)
		}
		q := query(i) // garbage once sent: not in the live heap after GC
		fds = append(fds, rawJoin(b, addr, t, q))
	}
	var total1 runtime.MemStats
	runtime.ReadMemStats(&total1)
	after := heapAfterGC()
	b.ReportMetric(float64(after-before)/float64(n), "live-B/conn")
	saveHeapProfile(b)
	b.ReportMetric(float64(total1.TotalAlloc-total0.TotalAlloc)/float64(n), "alloc-B/conn")
}

// saveHeapProfile writes the heap profile to $BENCH_HEAP_PROFILE, if set:
// run with -memprofilerate 1 to see which allocation sites the open
// connections keep alive at this moment.
func saveHeapProfile(b *testing.B) {
	path := os.Getenv("BENCH_HEAP_PROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

func heapAfterGC() int64 {
	var m runtime.MemStats
	for range 2 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// rawJoin opens a blocking socket, upgrades it and joins topic, returning
// the fd once the join reply arrived.
func rawJoin(b *testing.B, addr *net.TCPAddr, topic, query string) int {
	return rawJoinWith(b, addr, topic, query, "")
}

// rawJoinWith is rawJoin with extra request header lines ("K: v\r\n").
func rawJoinWith(b *testing.B, addr *net.TCPAddr, topic, query, header string) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	sa := &unix.SockaddrInet4{Port: addr.Port}
	copy(sa.Addr[:], addr.IP.To4())
	err = unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa) // retried, it reports the pending connect's outcome
	}
	if err != nil && err != unix.EISCONN {
		b.Fatal(err)
	}
	req := "GET /socket/websocket?vsn=2.0.0" + query + " HTTP/1.1\r\nHost: " + addr.String() +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	writeAll(b, fd, []byte(req))
	var buf [4096]byte
	var got []byte
	for !bytes.Contains(got, []byte("\r\n\r\n")) {
		got = append(got, readSome(b, fd, buf[:])...)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101")) {
		b.Fatalf("upgrade: %q", got)
	}
	if strings.Contains(header, "permessage-deflate") && !bytes.Contains(got, []byte("permessage-deflate")) {
		b.Fatalf("compression not negotiated: %q", got)
	}
	got = got[bytes.Index(got, []byte("\r\n\r\n"))+4:]
	join := []byte(`["1","1",` + strconv.Quote(topic) + `,"phx_join",{}]`)
	frame := []byte{0x81, 0x80 | byte(len(join)), 0, 0, 0, 0} // zero mask key
	if len(join) > 125 {
		b.Fatal("join frame too long for this client")
	}
	writeAll(b, fd, append(frame, join...))
	for {
		if whole(got) {
			if !bytes.Contains(got, []byte(`"ok"`)) {
				b.Fatalf("join %s: %q", topic, got)
			}
			return fd
		}
		got = append(got, readSome(b, fd, buf[:])...)
	}
}

// whole reports whether p starts with a complete unmasked server frame.
func whole(p []byte) bool {
	if len(p) < 2 {
		return false
	}
	switch l := int(p[1] & 0x7f); l {
	case 126:
		return len(p) >= 4 && len(p) >= 4+int(p[2])<<8|int(p[3])
	case 127:
		return false // never this large here
	default:
		return len(p) >= 2+l
	}
}

func writeAll(b *testing.B, fd int, p []byte) {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		p = p[n:]
	}
}

func readSome(b *testing.B, fd int, buf []byte) []byte {
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	n, err := unix.Read(fd, buf)
	for err == unix.EINTR { // the Go runtime's preemption signals
		n, err = unix.Read(fd, buf)
	}
	if err != nil || n <= 0 {
		b.Fatalf("read: %d %v", n, err)
	}
	return buf[:n]
}
