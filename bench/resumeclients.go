package bench

import (
	"bufio"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// joinPos is a persistent channel's position as a join reply gives it,
// and whether a resume was recovered.
type joinPos struct {
	Epoch     string `json:"epoch"`
	Offset    string `json:"offset"`
	Recovered bool   `json:"recovered"`
}

// resumeControl runs a resume worker's commands: "drop" closes every
// connection (not counted as lost) and reports "dropped"; "resume"
// reconnects them all at once, each joining with the position its first
// join was answered with, and reports "resumed" once every connection
// has its answer and ResumeWant messages (or failed).
func (w *worker) resumeControl(ctx context.Context, dialer ws.Dialer, conns []*benchConn, cmds <-chan string, report func(Report)) {
	for {
		var cmd string
		select {
		case <-ctx.Done():
			return
		case cmd = <-cmds:
		}
		switch cmd {
		case "drop":
			w.dropping.Store(true)
			w.heartbeatNone()
			for _, c := range conns {
				c.nc.Close()
			}
			report(Report{Type: "dropped"})
		case "resume":
			w.resumeAll(ctx, dialer, conns, report)
			w.dropping.Store(false)
		}
	}
}

func (w *worker) resumeAll(ctx context.Context, dialer ws.Dialer, conns []*benchConn, report func(Report)) {
	o := w.o
	start := time.Now()
	var recovered, notRecovered, failed atomic.Int64
	var last atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, o.Concurrency)
	var wg sync.WaitGroup
	for i, old := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, pos *joinPos) {
			defer wg.Done()
			c, err := w.openOne(ctx, dialer, o.Offset+i, pos)
			<-sem
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			conns[i] = c
			w.heartbeatTo(c)
			// Count the replayed messages; the connection is recovered
			// when the reply said so and all of them arrived.
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * o.JoinTimeout))
			r := bufio.NewReaderSize(c.rd, 2048)
			buf := make([]byte, 512)
			got := 0
			for got < o.ResumeWant {
				p, err := c.readFrame(r, &buf)
				if err != nil {
					break
				}
				if w.record(p, time.Now().UnixNano()) {
					got++
				}
			}
			_ = c.nc.SetReadDeadline(time.Time{})
			if got < o.ResumeWant || c.pos == nil || !c.pos.Recovered {
				notRecovered.Add(1)
			} else {
				recovered.Add(1)
				now := time.Now().UnixNano()
				for {
					l := last.Load()
					if now <= l || last.CompareAndSwap(l, now) {
						break
					}
				}
			}
			c.rd = r // keep what the reader buffered
			go w.readLoop(ctx, c)
		}(i, old.pos)
	}
	wg.Wait()
	var took int64
	if l := last.Load(); l > 0 {
		took = l - start.UnixNano()
	}
	msg, _ := firstErr.Load().(string)
	report(Report{Type: "resumed", Recovered: recovered.Load(), NotRecovered: notRecovered.Load(), Failed: failed.Load(), ResumeNanos: took, Error: msg})
}
