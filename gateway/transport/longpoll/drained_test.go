package longpoll

import (
	"bytes"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Drained is woken by the poll that takes the buffer, and by the
// session's end: what replay pacing waits on.
func TestDrained(t *testing.T) {
	h := newHarness(t, fast())
	tok := h.open()
	c := h.session(0).conn
	if !isClosed(c.Drained(0)) {
		t.Fatal("Drained of an empty buffer is not closed")
	}
	if !c.Send(transport.NewText(bytes.Repeat([]byte("a"), 60))) {
		t.Fatal("Send refused")
	}
	if !isClosed(c.Drained(60)) {
		t.Fatal("Drained(60) with 60 bytes buffered is not closed")
	}
	d := c.Drained(10)
	if isClosed(d) {
		t.Fatal("Drained(10) closed with 60 bytes buffered")
	}
	if p := h.get(tq(tok)); p.Status != 200 {
		t.Fatalf("poll = %+v", p)
	}
	select {
	case <-d:
	case <-time.After(10 * time.Second):
		t.Fatal("the poll that took the buffer did not wake Drained")
	}
	c.Send(transport.NewText([]byte("b")))
	d = c.Drained(0)
	c.Close(transport.CloseNormal, "")
	if !isClosed(d) || !isClosed(c.Drained(0)) {
		t.Fatal("Drained not closed after the session ended")
	}
}
