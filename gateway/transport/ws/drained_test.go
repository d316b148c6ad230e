package ws_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

type idle struct{}

func (idle) HandleMessage(bool, []byte)      {}
func (idle) HandleClose(transport.CloseCode) {}

// Drained is woken by the loop once the socket took the queue down to
// the limit, and at once for a closed connection: what replay pacing
// waits on instead of polling Backlog.
func TestDrained(t *testing.T) {
	srv, err := fws.New(fws.Config{MaxQueueBytes: 1 << 30, WriteTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan transport.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session { conns <- c; return idle{} })
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	})
	nc, _, _, err := ws.Dial(context.Background(), "ws"+strings.TrimPrefix(hs.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var c transport.Conn
	select {
	case c = <-conns:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	if !isClosed(c.Drained(0)) {
		t.Fatal("Drained of an empty queue is not closed")
	}
	// The client reads nothing: queue more than the kernel's buffers
	// take (one shared 64 KiB message, 32 MiB in all).
	m := transport.NewText(make([]byte, 64<<10))
	const limit = 64 << 10
	for range 512 {
		if !c.Send(m) {
			t.Fatal("Send refused")
		}
	}
	if c.Backlog() <= 4*limit {
		t.Fatalf("backlog %d after 32 MiB to a client that reads nothing", c.Backlog())
	}
	drained := c.Drained(limit)
	time.Sleep(50 * time.Millisecond)
	if isClosed(drained) {
		t.Fatalf("Drained(%d) closed with %d bytes queued", limit, c.Backlog())
	}
	go func() { _, _ = io.Copy(io.Discard, nc) }() // the client reads: the loop drains the queue
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		t.Fatalf("Drained not closed; backlog %d", c.Backlog())
	}
	if b := c.Backlog(); b > limit {
		t.Fatalf("Drained closed with %d bytes queued, limit %d", b, limit)
	}
	c.Close(transport.CloseNormal, "")
	if !isClosed(c.Drained(0)) {
		t.Fatal("Drained of a closed connection is not closed")
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
