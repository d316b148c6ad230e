package longpoll

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// TestOutputBudgetCutsLargest: sessions that stopped polling, each under
// its own MaxBuffered, together go over the process's output budget; the
// one holding the most ends with 4008 (its next GET: 410), a session that
// polls gets every message, and the budget's count returns to zero once
// the rest are closed and their buffers taken.
func TestOutputBudgetCutsLargest(t *testing.T) {
	const (
		stalled = 4
		limit   = 16 << 10
		rounds  = 60
	)
	budget := transport.NewOutputBudget(limit)
	cfg := Config{PollWindow: 150 * time.Millisecond, IdleTimeout: 20 * time.Second, MaxBuffered: 256 << 10, Budget: budget}
	h := newHarness(t, cfg)
	var toks []string
	for range stalled + 1 {
		tok := h.open()
		h.get(tq(tok)) // polled once: the whole MaxBuffered applies
		toks = append(toks, tok)
	}
	reader := h.session(stalled).conn
	var got atomic.Int64
	stop := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for range 10 * rounds {
			select {
			case <-stop:
				return
			default:
			}
			p := do(t, "GET", h.url+"?"+tq(toks[stalled]), nil, "")
			got.Add(int64(len(p.Messages)))
			if p.Status == 410 {
				return
			}
		}
	}()

	msg := transport.NewText(bytes.Repeat([]byte("m"), 500))
	firstCut := -1
	for r := range rounds {
		// Stalled session i is sent i+1 messages a round: the last one
		// holds the most whenever the budget is reached.
		for i := range stalled {
			for range i + 1 {
				if !h.session(i).conn.Send(msg) && firstCut < 0 {
					firstCut = i
				}
			}
		}
		if !reader.Send(msg) {
			t.Fatal("the polling session was refused")
		}
		for deadline := time.Now().Add(wait); got.Load() < int64(r+1) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if used := budget.Used(); used > limit+int64(msg.Len()) {
			t.Fatalf("round %d: %d bytes counted, limit %d", r, used, limit)
		}
	}
	close(stop)
	if n := got.Load(); n != rounds {
		t.Fatalf("polling session got %d of %d", n, rounds)
	}
	if firstCut != stalled-1 {
		t.Fatalf("first cut: session %d, want the largest (%d)", firstCut, stalled-1)
	}
	h.session(stalled-1).waitClosed(t, transport.CloseSlowConsumer)
	if p := h.get(tq(toks[stalled-1])); p.Status != 410 {
		t.Fatalf("poll of the cut session = %+v, want 410", p)
	}
	if budget.Cuts() == 0 {
		t.Fatal("no cut counted")
	}

	// Close the rest: each keeps its buffer for one more GET, which
	// takes it; then nothing may be left counted.
	<-polled
	for i := range stalled + 1 {
		h.session(i).conn.Close(transport.CloseNormal, "")
		h.get(tq(toks[i]))
	}
	if used := budget.Used(); used != 0 {
		t.Fatalf("%d bytes still counted after every session ended and was polled", used)
	}
}
