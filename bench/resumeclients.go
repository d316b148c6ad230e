package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strconv"
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

// resumeReadBuffer is a resuming connection's read buffer: the replay of
// 100 messages of 200 bytes (~30 KiB) arrives in two or three reads, not
// fifteen, so the clients spend less of the CPU they share with the
// gateway.
const resumeReadBuffer = 16 << 10

func (w *worker) resumeAll(ctx context.Context, dialer ws.Dialer, conns []*benchConn, report func(Report)) {
	o := w.o
	start := time.Now()
	refused0 := w.refused.Load()
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
			// Count the replayed messages, checking that they come in
			// stream order after the position resumed from; the
			// connection is recovered when the reply said so and all of
			// them arrived in order.
			_ = c.nc.SetReadDeadline(time.Now().Add(2 * o.JoinTimeout))
			r := bufio.NewReaderSize(c.rd, resumeReadBuffer)
			buf := make([]byte, 512)
			prev, _ := strconv.ParseUint(pos.Offset, 10, 64)
			got, disorder := 0, ""
			for got < o.ResumeWant {
				p, err := c.readFrame(r, &buf)
				if err != nil {
					break
				}
				if !w.record(p, time.Now().UnixNano()) {
					continue
				}
				if off, ok := refOffset(p); !ok || off <= prev {
					if disorder == "" {
						disorder = fmt.Sprintf("replayed message %d: offset %q after %d", got+1, refSlot(p), prev)
					}
				} else {
					prev = off
				}
				got++
			}
			_ = c.nc.SetReadDeadline(time.Time{})
			switch {
			case disorder != "":
				notRecovered.Add(1)
				firstErr.CompareAndSwap(nil, disorder)
			case got < o.ResumeWant || c.pos == nil || !c.pos.Recovered:
				notRecovered.Add(1)
			default:
				recovered.Add(1)
				now := time.Now().UnixNano()
				w.resumeLat.Add((now - start.UnixNano()) / 1000)
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
	report(Report{Type: "resumed", Recovered: recovered.Load(), NotRecovered: notRecovered.Load(), Failed: failed.Load(),
		ResumeNanos: took, Error: msg, Refused: w.refused.Load() - refused0, Hist: w.resumeLat.Sparse()})
}

// refSlot is a broadcast frame's ref slot, [join_ref, ref, ...]: in a
// persistent channel the message's stream offset, quoted.
func refSlot(p []byte) []byte {
	i := bytes.IndexByte(p, ',')
	if i < 0 {
		return nil
	}
	p = p[i+1:]
	if j := bytes.IndexByte(p, ','); j >= 0 {
		return p[:j]
	}
	return p
}

// refOffset is the offset in a broadcast's ref slot.
func refOffset(p []byte) (uint64, bool) {
	s := refSlot(p)
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s[1:len(s)-1]), 10, 64)
	return n, err == nil
}
