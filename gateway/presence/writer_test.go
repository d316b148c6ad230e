package presence

import (
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// gate holds the first Send made through a gateConn once armed.
type gate struct {
	mu      sync.Mutex
	armed   bool
	entered chan *gateConn
	release chan struct{}
}

type gateConn struct {
	*transporttest.Conn
	g *gate
}

func (c *gateConn) Send(m *transport.Message) bool {
	c.g.mu.Lock()
	armed := c.g.armed
	c.g.armed = false
	c.g.mu.Unlock()
	if armed {
		c.g.entered <- c
		<-c.g.release
	}
	return c.Conn.Send(m)
}

// Untrack returns only once no flush can still send the instance a
// frame: the session queues phx_close right after it, and nothing of
// presence may follow (docs/architecture.md, "Who writes to a
// connection").
func TestUntrackWaitsForFlushSends(t *testing.T) {
	n := newNet()
	c := &clock{t: time.Unix(1000, 0)}
	tr, _ := newTracker(t, n, "A", c)
	g := &gate{entered: make(chan *gateConn, 1), release: make(chan struct{})}
	conns := map[*gateConn]any{}
	for _, name := range []string{"a", "b"} {
		gc := &gateConn{Conn: transporttest.NewConn(), g: g}
		key := new(int)
		conns[gc] = key
		tr.Track("room:1", key, Member{Conn: gc, Version: phoenix.V2, JoinRef: phoenix.R("1"), ConnID: "conn-" + name,
			Params: []byte(`{"user":"` + name + `"}`)})
	}
	waitSynced(t, tr, "room:1")
	tr.flush() // their states
	tr.Track("room:1", new(int), Member{Conn: transporttest.NewConn(), Version: phoenix.V2, JoinRef: phoenix.R("1"),
		ConnID: "conn-c", Params: []byte(`{"user":"c"}`)})
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	flushed := make(chan struct{})
	go func() { tr.flush(); close(flushed) }() // a diff (c joined) for a and b
	var held *gateConn
	select {
	case held = <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the flush sent nothing")
	}
	var other *gateConn
	for gc := range conns {
		if gc != held {
			other = gc
		}
	}
	before := other.Len() // its diff is still in the flush's hands
	untracked := make(chan struct{})
	go func() { tr.Untrack("room:1", conns[other]); close(untracked) }()
	select {
	case <-untracked:
		close(g.release)
		<-flushed
		t.Fatalf("Untrack returned while a flush still held a frame for the instance (%d frames then, %d after)", before, other.Len())
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	<-untracked
	after := other.Len()
	<-flushed
	tr.flush()
	if got := other.Len(); got != after {
		t.Fatalf("%d presence frames after Untrack returned", got-after)
	}
}
