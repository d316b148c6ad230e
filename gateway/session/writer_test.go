package session_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/session"
	"github.com/fabric-rt/fabric/internal/testkit/transporttest"
)

// The order of what a connection is sent about one channel instance
// (docs/architecture.md, "Who writes to a connection"): the join reply
// first, then the replay, and phx_close last — even when the client
// leaves while its replay waits for the connection to drain.
func TestLeaveDuringReplayEndsWithClose(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := memory.NewHistory("room")
	rooms := namespace.MustNew(map[string]namespace.Namespace{"room": {History: true}})
	var offs []uint64
	for i := range 100 {
		off, err := b.Publish(ctx, "room:x", "m", fmt.Appendf(nil, `{"i":%d}`, i))
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	h := hub.New(hub.Config{Broker: b, Namespaces: rooms, LeaveGrace: time.Hour, ReplayPage: 10, ReplayBacklog: 100})
	t.Cleanup(h.Close)
	cfg := &session.Config{Hub: h, Broker: b}
	cfg.SetDefaults()
	conn := transporttest.NewConn()
	conn.SetBacklog(1 << 20) // the socket takes nothing: the replay waits after its first page
	s := session.New(cfg, conn, phoenix.V2, nil)
	epoch := b.Stream("room").Epoch()
	s.HandleMessage(false, fmt.Appendf(nil, `["1","1","room:x","phx_join",{"epoch":%q,"offset":"%d"}]`, epoch, offs[0]))
	got := conn.WaitLen(11, wait)
	if len(got) < 11 || !strings.Contains(string(got[0].Data), `"phx_reply"`) || !strings.Contains(string(got[0].Data), `"recovered":true`) {
		t.Fatalf("want the join reply, then a page: %s", texts(got))
	}
	s.HandleMessage(false, []byte(`["1","2","room:x","phx_leave",{}]`))
	conn.SetBacklog(0) // the replay may go on: it must not, the client left
	waitFor(t, "the replay to end", func() bool { return h.Members("room:x") == 0 && len(conn.Sent()) >= 13 })
	time.Sleep(quiet)
	all := conn.Sent()
	last := string(all[len(all)-1].Data)
	if last != `["1","1","room:x","phx_close",{}]` {
		t.Fatalf("last frame %s, want phx_close; all: %s", last, texts(all))
	}
	if n := len(all); n != 13 {
		t.Fatalf("%d frames, want the reply, one page of 10, the leave reply and phx_close: %s", n, texts(all))
	}
	if _, err := b.Publish(ctx, "room:x", "m", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(quiet)
	if n := len(conn.Sent()); n != 13 {
		t.Fatalf("a live message reached the instance after phx_close: %s", texts(conn.Sent()[13:]))
	}
}
