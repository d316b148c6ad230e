package ws_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// dialStalled opens a WebSocket whose client never reads, with a small
// receive buffer so the server's socket stops taking bytes early.
func dialStalled(t *testing.T, url string) net.Conn {
	t.Helper()
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	c, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOutputBudgetCutsLargest: many clients that stopped reading, each far
// under its own bound, together go over the process's output budget; the
// one holding the most is cut with 4008 first, the reading client gets
// every message, and the budget's count is back to zero once all are gone.
// The messages carry a shared Tail (the shape of a presence_state to a
// wave of joiners): it counts once per connection that queues it.
func TestOutputBudgetCutsLargest(t *testing.T) {
	const (
		stalled = 6
		limit   = 1 << 20
	)
	budget := transport.NewOutputBudget(limit)
	// Per-connection bound and write timeout far away: only the process's
	// budget can cut here.
	f := newFixture(t, fws.Config{MaxQueueBytes: 64 << 20, WriteTimeout: time.Minute, SendBuffer: 16 << 10, Budget: budget})
	var clients []net.Conn
	for i := range stalled {
		clients = append(clients, dialStalled(t, f.url))
		waitFor(t, "session", func() bool { return f.count() == i+1 })
	}
	fast := f.dial(t)
	waitFor(t, "fast session", func() bool { return f.count() == stalled+1 })
	sessions := f.sessions()
	reader := sessions[stalled]

	tail := &transport.Message{Data: []byte(strings.Repeat("s", 2000))}
	msg := &transport.Message{Data: []byte(`{"head":1}`), Tail: tail}
	const rounds = 400
	var fastGot atomic.Int64
	done := make(chan error, 1)
	go func() {
		for fastGot.Load() < rounds {
			fr, err := readFrame(t, fast)
			if err != nil {
				done <- err
				return
			}
			if fr.op == ws.OpContinuation { // the Tail ends the message
				fastGot.Add(1)
			}
		}
		done <- nil
	}()

	// Stalled client i is sent i+1 messages a round: the last one holds
	// the most whenever the budget is reached.
	firstCut := -1
	closeFrame := make(chan int, 1)
	for r := 0; r < rounds; r++ {
		for i := range stalled {
			for range i + 1 {
				if !sessions[i].c.Send(msg) && firstCut < 0 {
					firstCut = i
					// The cut client, reading now (before the close
					// timeout drops its socket), finds 4008 after what
					// it was sent.
					go func(c net.Conn) { closeFrame <- expectCloseErr(c) }(clients[i])
				}
			}
		}
		if !reader.c.Send(msg) {
			t.Fatal("the reading client was refused")
		}
		for deadline := time.Now().Add(10 * time.Second); int64(r)-fastGot.Load() > 20 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		if used := budget.Used(); used > 2*limit {
			t.Fatalf("round %d: %d bytes counted, limit %d", r, used, limit)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("reading client: %v after %d", err, fastGot.Load())
	}
	if n := fastGot.Load(); n != rounds {
		t.Fatalf("reading client got %d of %d", n, rounds)
	}
	if firstCut != stalled-1 {
		t.Fatalf("first cut: stalled client %d, want the largest (%d)", firstCut, stalled-1)
	}
	if budget.Cuts() == 0 {
		t.Fatal("no cut counted")
	}
	if used := budget.Used(); used > 2*limit {
		t.Fatalf("%d bytes counted after the rounds, limit %d", used, limit)
	}
	select {
	case code := <-sessions[stalled-1].closed:
		if code != transport.CloseSlowConsumer {
			t.Fatalf("largest closed with %d, want 4008", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("largest never closed")
	}
	if code := <-closeFrame; code != int(transport.CloseSlowConsumer) {
		t.Fatalf("close frame %d, want 4008", code)
	}

	// No accounting is left behind by any close path: peers hanging up,
	// close handshakes cut short, the cut ones.
	for _, c := range clients {
		c.Close()
	}
	fast.Close()
	waitFor(t, "all closed", func() bool { return f.srv.Len() == 0 })
	if used := budget.Used(); used != 0 {
		t.Fatalf("%d bytes still counted after every connection closed", used)
	}
}

// expectCloseErr reads until a close frame and returns its code, or -1 when
// the stream ends first (for goroutines: no t.Fatal).
func expectCloseErr(c net.Conn) int {
	for range 1 << 20 {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		h, err := ws.ReadHeader(c)
		if err != nil {
			return -1
		}
		p := make([]byte, h.Length)
		if _, err := io.ReadFull(c, p); err != nil {
			return -1
		}
		if h.OpCode == ws.OpClose && len(p) >= 2 {
			return int(p[0])<<8 | int(p[1])
		}
	}
	return -1
}

// Counting a stuck connection's queue against the budget adds no
// allocation to Send: the frame is built once, the count is an atomic.
func TestOutputBudgetSendAllocs(t *testing.T) {
	budget := transport.NewOutputBudget(1 << 30)
	f := newFixture(t, fws.Config{MaxQueueBytes: 1 << 30, WriteTimeout: time.Minute, SendBuffer: 16 << 10, Budget: budget})
	dialStalled(t, f.url)
	waitFor(t, "session", func() bool { return f.count() == 1 })
	c := f.sessions()[0].c
	msg := transport.NewText([]byte(strings.Repeat("a", 4000)))
	// Fill the socket until the queue stays: the socket is stuck and its
	// queue counts.
	for i := 0; budget.Used() == 0; i++ {
		if i == 10000 {
			t.Fatal("the socket never stopped taking bytes")
		}
		c.Send(msg)
		time.Sleep(100 * time.Microsecond)
	}
	before := budget.Used()
	if a := testing.AllocsPerRun(1000, func() { c.Send(msg) }); a != 0 {
		t.Fatalf("%v allocations per Send to a stuck connection", a)
	}
	// 1,001 Sends (AllocsPerRun warms up once); the socket may still
	// take a little.
	if want := before + 900*int64(len(fws.Frame(msg))); budget.Used() < want {
		t.Fatalf("counted %d after the Sends, want at least %d", budget.Used(), want)
	}
}
