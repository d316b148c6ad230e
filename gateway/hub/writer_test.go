package hub_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// The order the hub writes a member's frames in (docs/architecture.md,
// "Who writes to a connection"): its join reply, then its replay, paced
// by the transport's drained notification, and nothing once it left.

// replyListener is a member key with a join reply; withdraw makes it
// answer as a session whose instance already left.
type replyListener struct {
	mu       sync.Mutex
	got      hub.JoinResult
	withdraw bool
}

var replyFrame = transport.NewText([]byte("reply"))

func (l *replyListener) JoinReply(r hub.JoinResult) (*transport.Message, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = r
	if l.withdraw {
		return nil, false
	}
	return replyFrame, true
}

func (l *replyListener) Reset() {}

// replayHub is a hub over a persistent channel "room:1" of missed
// messages that no ring holds yet, replayed ten at a time.
func replayHub(t *testing.T, missed uint64) *hub.Hub {
	t.Helper()
	b := &waveBroker{Broker: memory.New(), head: broker.Position{Epoch: "e", Offset: missed}}
	for i := uint64(1); i <= missed; i++ {
		b.msgs = append(b.msgs, &broker.Message{Topic: "room:1", Event: "e", Payload: []byte(`{}`), Offset: i, Prev: i - 1})
	}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour, ReplayPage: 10, ReplayBacklog: 1000})
	t.Cleanup(h.Close)
	return h
}

// resume starts a resume from offset 0 on a connection whose socket
// "stopped reading" (a backlog over ReplayBacklog), and returns the key,
// the conn and Join's answer to come.
func resume(h *hub.Hub) (*replyListener, *transporttest.Conn, chan error) {
	c := transporttest.NewConn()
	c.SetBacklog(1 << 20)
	l := &replyListener{}
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		errc <- h.Join(ctx, "room:1", hub.Member{Conn: c, Version: phoenix.V2, Key: l, Resume: &broker.Position{Epoch: "e"}})
	}()
	return l, c, errc
}

func TestReplayPacedByDrained(t *testing.T) {
	t.Parallel()
	h := replayHub(t, 100)
	_, c, errc := resume(h)
	c.WaitLen(11, wait) // the reply and the first page
	// The replay waits for the transport to say the queue drained; no
	// further page while the socket takes nothing.
	time.Sleep(100 * time.Millisecond)
	if n := c.Len(); n != 11 {
		t.Fatalf("%d frames queued on a connection that drains nothing, want the reply and one page (11)", n)
	}
	c.SetBacklog(0) // the socket took it: Drained fires
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("replay did not go on after the connection drained")
	}
	sent := c.Sent()
	if len(sent) != 101 || sent[0] != replyFrame {
		t.Fatalf("%d frames, first %q: want the join reply, then 100 messages", len(sent), sent[0].Data)
	}
	for i, m := range sent[1:] {
		if want := `[null,"` + strconv.Itoa(i+1) + `",`; !bytes.HasPrefix(m.Data, []byte(want)) {
			t.Fatalf("frame %d = %s, want offset %d (in order)", i+1, m.Data, i+1)
		}
	}
	if h.Members("room:1") != 1 {
		t.Fatal("not attached after its replay")
	}
}

// A leave during a replay: nothing reaches the member once Leave
// returned (the session queues phx_close right after it), and the
// member is not attached.
func TestLeaveStopsReplay(t *testing.T) {
	t.Parallel()
	h := replayHub(t, 100)
	l, c, errc := resume(h)
	c.WaitLen(11, wait)
	h.Leave("room:1", l)
	n := c.Len()
	c.SetBacklog(0)
	select {
	case err := <-errc:
		if !errors.Is(err, hub.ErrWithdrawn) {
			t.Fatalf("Join after a leave mid-replay: %v, want ErrWithdrawn", err)
		}
	case <-time.After(wait):
		t.Fatal("replay did not end after the leave")
	}
	if got := c.Len(); got != n {
		t.Fatalf("%d frames sent after Leave returned", got-n)
	}
	if m := h.Members("room:1"); m != 0 {
		t.Fatalf("%d members after the leave", m)
	}
}

// A connection that closes while its replay waits for it to drain wakes
// the replay (the transport closes Drained's channel), which ends.
func TestReplayEndsWhenConnCloses(t *testing.T) {
	t.Parallel()
	h := replayHub(t, 100)
	_, c, errc := resume(h)
	c.WaitLen(11, wait)
	c.Close(transport.CloseGoingAway, "bye")
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("Join succeeded on a closed connection")
		}
	case <-time.After(wait):
		t.Fatal("replay still waiting after the connection closed")
	}
	if m := h.Members("room:1"); m != 0 {
		t.Fatalf("%d members", m)
	}
}

// A member whose instance left before the hub attached it (JoinReply
// says so) gets nothing and is not attached, on both join paths.
func TestJoinReplyWithdrawn(t *testing.T) {
	t.Parallel()
	b := memory.New()
	h := newHub(t, b, time.Hour)
	c := transporttest.NewConn()
	l := &replyListener{withdraw: true}
	m := hub.Member{Conn: c, Version: phoenix.V2, Key: l}
	if err := h.Join(context.Background(), "room:1", m); !errors.Is(err, hub.ErrWithdrawn) {
		t.Fatalf("Join: %v, want ErrWithdrawn", err)
	}
	if !h.TryJoin("room:1", m) {
		t.Fatal("TryJoin did not handle the join of a live channel")
	}
	if _, err := b.Publish(context.Background(), "room:1", "e", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := c.Len(); n != 0 || h.Members("room:1") != 0 {
		t.Fatalf("withdrawn member: %d frames, %d members", n, h.Members("room:1"))
	}
}
