package e2e

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// transports runs a phoenix.js test over WebSocket and over LongPoll.
var transports = []struct {
	name string
	opts map[string]any
}{
	{"websocket", map[string]any{"reconnectAfterMs": 50, "rejoinAfterMs": 50}},
	{"longpoll", map[string]any{"longpoll": true, "reconnectAfterMs": 50, "rejoinAfterMs": 50}},
}

// A moderator clears a channel while phoenix.js clients (through the
// resume helper) are in it and in another channel: the cleared channel's
// clients are told (onGap, history_cleared) and keep receiving live
// messages; the cleared messages are never delivered again; the other
// channel notices nothing.
func TestPhoenixJSChannelCleared(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			f := startFabric(t, nil)
			p := phxnode.Start(t)
			if err := p.Connect(f.socketURL(), nil, tr.opts); err != nil {
				t.Fatal(err)
			}
			for _, topic := range []string{"room:mod", "room:keep"} {
				if res := p.JoinOpts(topic, nil, map[string]any{"resumable": true}); res.Status != "ok" {
					t.Fatalf("join %s: %+v", topic, res)
				}
			}
			for i := 0; i < 3; i++ {
				f.publish("fabric.room.mod", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
				f.publish("fabric.room.keep", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
			}
			collectMsgs(t, p, "room:mod", "m", 3)
			collectMsgs(t, p, "room:keep", "m", 3)
			mod, err := natsbroker.NewModerator(f.nc, "")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := mod.ClearChannel(t.Context(), "room:mod"); err != nil {
				t.Fatal(err)
			}
			gap := p.MustNext(wait, "gap event", phxnode.IsEv("gap"))
			t.Logf("%s: clear acknowledged → onGap in %v", tr.name, time.Since(start))
			if !bytes.Contains(gap.Raw, []byte(`"reason":"history_cleared"`)) || !bytes.Contains(gap.Raw, []byte(`"topic":"room:mod"`)) {
				t.Fatalf("gap: %s", gap)
			}
			eventually(t, wait, "rejoined", func() bool { return f.Gateway().Members("room:mod") == 1 })
			f.publish("fabric.room.mod", "m", []byte(`{"i":10}`))
			f.publish("fabric.room.keep", "m", []byte(`{"i":10}`))
			if is := msgIs(t, collectMsgs(t, p, "room:mod", "m", 1)); is[0] != 10 {
				t.Fatalf("after the clear: %v (a cleared message delivered again?)", is)
			}
			if is := msgIs(t, collectMsgs(t, p, "room:keep", "m", 1)); is[0] != 10 {
				t.Fatalf("other channel: %v", is)
			}
			if gaps := p.Drain(phxnode.IsEv("gap")); len(gaps) > 0 {
				t.Fatalf("more gaps: %v", gaps)
			}
		})
	}
}

// A stream deleted and re-added from its saved config (Fabric's metadata
// included) while phoenix.js clients are connected: they are told
// (epoch_changed) and then receive the new incarnation's messages, over
// WebSocket and LongPoll alike.
func TestPhoenixJSStreamReadded(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			f := startFabric(t, nil)
			p := phxnode.Start(t)
			if err := p.Connect(f.socketURL(), nil, tr.opts); err != nil {
				t.Fatal(err)
			}
			if res := p.JoinOpts("room:re", nil, map[string]any{"resumable": true}); res.Status != "ok" {
				t.Fatalf("join: %+v", res)
			}
			for i := 0; i < 5; i++ {
				f.publish("fabric.room.re", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
			}
			collectMsgs(t, p, "room:re", "m", 5)
			js, _ := jetstream.New(f.nc)
			st, err := js.Stream(t.Context(), "FABRIC_room")
			if err != nil {
				t.Fatal(err)
			}
			saved := st.CachedInfo().Config
			if err := js.DeleteStream(t.Context(), "FABRIC_room"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
			if _, err := js.CreateStream(t.Context(), saved); err != nil {
				t.Fatalf("re-add (within Fabric's 2 s): %v", err)
			}
			// The new incarnation's first messages: offsets the client
			// already saw in the old one.
			f.publish("fabric.room.re", "m", []byte(`{"i":100}`))
			gap := p.MustNext(wait, "gap event", phxnode.IsEv("gap"))
			if !bytes.Contains(gap.Raw, []byte(`"reason":"epoch_changed"`)) {
				t.Fatalf("gap: %s", gap)
			}
			eventually(t, wait, "rejoined", func() bool { return f.Gateway().Members("room:re") == 1 })
			f.publish("fabric.room.re", "m", []byte(`{"i":101}`))
			// 100 arrives only if the rejoin's position was read before it.
			got := msgIs(t, collectMsgs(t, p, "room:re", "m", 1))
			if got[0] == 100 {
				got = msgIs(t, collectMsgs(t, p, "room:re", "m", 1))
			}
			if got[0] != 101 {
				t.Fatalf("after the re-add: %v", got)
			}
		})
	}
}
