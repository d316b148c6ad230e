package ws_test

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// A message with a shared Tail goes out as one fragmented message: its own
// Data as the first fragment, the Tail as the final continuation frame.
func TestTailIsAContinuationFrame(t *testing.T) {
	f := newFixture(t, fws.Config{})
	c := f.dial(t)
	for deadline := time.Now().Add(10 * time.Second); f.count() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	tail := transport.NewText([]byte(strings.Repeat("s", 70000) + "]"))
	conn := f.sessions()[0].c
	for _, head := range []string{`["1",null,"t","e",`, `["22",null,"t","e",`} {
		if !conn.Send(&transport.Message{Data: []byte(head), Tail: tail}) {
			t.Fatal("send refused")
		}
	}
	conn.Send(transport.NewText([]byte("after")))
	for _, head := range []string{`["1",null,"t","e",`, `["22",null,"t","e",`} {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		h, err := ws.ReadHeader(c)
		if err != nil || h.Fin || h.OpCode != ws.OpText || h.Length != int64(len(head)) {
			t.Fatalf("first fragment: %+v %v", h, err)
		}
		if fr, _ := readPayload(c, h); string(fr) != head {
			t.Fatalf("first fragment %q", fr)
		}
		h, err = ws.ReadHeader(c)
		if err != nil || !h.Fin || h.OpCode != ws.OpContinuation || h.Length != 70001 {
			t.Fatalf("continuation: %+v %v", h, err)
		}
		if fr, _ := readPayload(c, h); string(fr) != string(tail.Data) {
			t.Fatal("continuation payload differs from the tail")
		}
	}
	if fr, err := readFrame(t, c); err != nil || string(fr.payload) != "after" || fr.op != ws.OpText {
		t.Fatalf("next message %q %v", fr.payload, err)
	}
}

func readPayload(c net.Conn, h ws.Header) ([]byte, error) {
	p := make([]byte, h.Length)
	_, err := io.ReadFull(c, p)
	return p, err
}

// The Tail counts against the connection's output budget like any byte.
func TestTailCountsAgainstTheBudget(t *testing.T) {
	f := newFixture(t, fws.Config{MaxQueueBytes: 64 << 10, SendBuffer: 16 << 10})
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	c, _, _, err := d.Dial(context.Background(), f.url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); f.count() < 1 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	s := f.sessions()[0]
	tail := transport.NewText([]byte(strings.Repeat("s", 40<<10)))
	cut := false
	for i := 0; i < 100 && !cut; i++ {
		cut = !s.c.Send(&transport.Message{Data: []byte("h"), Tail: tail})
		time.Sleep(2 * time.Millisecond)
	}
	if !cut {
		t.Fatal("a reader that does not read took 100 messages of 40 KiB of shared tail")
	}
	select {
	case code := <-s.closed:
		if code != transport.CloseSlowConsumer {
			t.Fatalf("close code %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not closed")
	}
}
