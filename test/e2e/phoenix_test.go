package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// The unmodified phoenix npm client, over WebSocket, against a real Fabric:
// the core promise of the foundation.
func TestPhoenixJSReceivesWhatServicesPublish(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), map[string]any{}, map[string]any{"heartbeatIntervalMs": 200}); err != nil {
		t.Fatal(err)
	}
	if status, resp := p.Join("room:lobby", nil); status != "ok" {
		t.Fatalf("join room:lobby: %s %s", status, resp)
	}
	if status, resp := p.Join("room:other", nil); status != "ok" {
		t.Fatalf("join room:other: %s %s", status, resp)
	}

	t.Run("JSON body reaches channel.on with the exact payload", func(t *testing.T) {
		body := []byte(`{"body":"hi","n":[1,2.5,"ü"],"nested":{"a":null}}`)
		f.publish("fabric.room.lobby", "new_msg", body)
		e := p.MustNext(10*time.Second, "new_msg", phxnode.IsMsg("room:lobby", "new_msg"))
		var got, want any
		json.Unmarshal(e.Payload, &got)
		json.Unmarshal(body, &want)
		if !jsonEqual(got, want) || e.Binary {
			t.Fatalf("payload %s binary=%v, want %s", e.Payload, e.Binary, body)
		}
	})

	t.Run("binary body arrives as an ArrayBuffer", func(t *testing.T) {
		body := []byte{0, 1, 2, 0xfe, 0xff}
		f.publish("fabric.room.lobby", "blob", body)
		e := p.MustNext(10*time.Second, "blob", phxnode.IsMsg("room:lobby", "blob"))
		if !e.Binary || !bytes.Equal(e.Bytes(), body) {
			t.Fatalf("binary=%v bytes=%v", e.Binary, e.Bytes())
		}
		// A binary frame has no ref slot: its offset follows in a
		// fabric:offset frame (room:* keeps history by default).
		off := p.MustNext(10*time.Second, "fabric:offset", phxnode.IsMsg("room:lobby", "fabric:offset"))
		if off.RefString() == "" {
			t.Fatalf("fabric:offset without an offset: %s", off)
		}
	})

	t.Run("no Fabric-Event header means event message", func(t *testing.T) {
		f.publish("fabric.room.lobby", "", []byte(`{"x":1}`))
		p.MustNext(10*time.Second, "message", phxnode.IsMsg("room:lobby", "message"))
	})

	t.Run("channels are isolated", func(t *testing.T) {
		f.publish("fabric.room.other", "only_other", []byte(`{}`))
		f.publish("fabric.room.lobby", "marker", []byte(`{}`))
		p.MustNext(10*time.Second, "marker", phxnode.IsMsg("room:lobby", "marker"))
		p.MustNext(10*time.Second, "only_other", phxnode.IsMsg("room:other", "only_other"))
		if leaked := p.Drain(phxnode.IsMsg("room:lobby", "only_other")); len(leaked) > 0 {
			t.Fatalf("room:lobby got room:other's message: %v", leaked)
		}
	})

	t.Run("heartbeats are answered", func(t *testing.T) {
		if _, err := p.Ping(); err != nil {
			t.Fatal(err)
		}
		// The client's own 200 ms heartbeats ran meanwhile: still connected.
		if st := p.State(); !st.Connected {
			t.Fatalf("not connected: %+v", st)
		}
	})

	t.Run("a push is published and acked", func(t *testing.T) {
		status, resp := p.Push("room:other", "shout", map[string]any{"body": "from js"})
		var ack struct {
			Offset uint64 `json:",string"`
		}
		if status != "ok" || json.Unmarshal(resp, &ack) != nil || ack.Offset == 0 {
			t.Fatalf("push: %s %s (want ok with the stored offset)", status, resp)
		}
		e := p.MustNext(10*time.Second, "own push broadcast", phxnode.IsMsg("room:other", "shout"))
		if string(e.Payload) != `{"body":"from js"}` || e.RefString() != fmt.Sprint(ack.Offset) {
			t.Fatalf("payload %s offset %s, acked offset %d", e.Payload, e.RefString(), ack.Offset)
		}
	})

	t.Run("after leave nothing arrives and the subscription is gone", func(t *testing.T) {
		if n := f.interest("fabric_live.room.lobby"); n != 1 {
			t.Fatalf("before leave: %d subscriptions on fabric.room.lobby, want 1", n)
		}
		p.Drain(phxnode.IsMsg("room:lobby", "")) // whatever arrived before the leave
		p.Leave("room:lobby")
		eventually(t, 10*time.Second, "lobby subscription dropped", func() bool {
			return f.interest("fabric_live.room.lobby") == 0
		})
		f.publish("fabric.room.lobby", "after_leave", []byte(`{}`))
		f.publish("fabric.room.other", "marker2", []byte(`{}`))
		p.MustNext(10*time.Second, "marker2", phxnode.IsMsg("room:other", "marker2"))
		if late := p.Drain(phxnode.IsMsg("room:lobby", "")); len(late) > 0 {
			t.Fatalf("received after leave: %v", late)
		}
	})

	t.Run("joining the same topic again leaves one delivery path", func(t *testing.T) {
		// phoenix.js leaves the old Channel object before joining the new one.
		if s, _ := p.Join("room:other", nil); s != "ok" {
			t.Fatalf("rejoin: %s", s)
		}
		f.publish("fabric.room.other", "once", []byte(`{}`))
		f.publish("fabric.room.other", "marker3", []byte(`{}`))
		p.MustNext(10*time.Second, "marker3", phxnode.IsMsg("room:other", "marker3"))
		if got := p.Drain(phxnode.IsMsg("room:other", "once")); len(got) != 1 {
			t.Fatalf("got %d copies, want 1", len(got))
		}
		if n := f.interest("fabric_live.room.other"); n != 1 {
			t.Fatalf("%d subscriptions on fabric.room.other, want 1", n)
		}
	})
}

// A refused join (invalid topic) is an error reply, the socket stays up.
func TestPhoenixJSInvalidTopic(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, nil); err != nil {
		t.Fatal(err)
	}
	before := f.Embedded().NATS().NumSubscriptions()
	res := p.JoinOpts("room:*", nil, map[string]any{"leaveOnError": true})
	if res.Status != "error" || !bytes.Contains(res.Response, []byte(`"invalid_topic"`)) {
		t.Fatalf("join room:*: %+v", res)
	}
	if n := f.Embedded().NATS().NumSubscriptions(); n != before {
		t.Fatalf("refused join changed the server's subscriptions from %d to %d", before, n)
	}
	if s, _ := p.Join("room:fine", nil); s != "ok" {
		t.Fatalf("join after refusal: %s", s)
	}
	if n := f.interest("fabric_live.room.fine"); n != 1 {
		t.Fatalf("%d subscriptions on fabric.room.fine, want 1", n)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// msgIs extracts the "i" counter of a test message.
func msgIs(t *testing.T, es []phxnode.Event) []int {
	t.Helper()
	var out []int
	for _, e := range es {
		var p struct{ I int }
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatalf("payload %s: %v", e.Payload, err)
		}
		out = append(out, p.I)
	}
	return out
}

// collectMsgs waits until n messages of event arrived on topic.
func collectMsgs(t *testing.T, p *phxnode.Puppet, topic, event string, n int) []phxnode.Event {
	t.Helper()
	var got []phxnode.Event
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		e, ok := p.Next(time.Second, phxnode.IsMsg(topic, event))
		if ok {
			got = append(got, e)
		}
	}
	if len(got) < n {
		t.Fatalf("got %d of %d %s messages", len(got), n, event)
	}
	return got
}

func contiguous(t *testing.T, is []int, from int) {
	t.Helper()
	for k, i := range is {
		if i != from+k {
			t.Fatalf("message %d is i=%d, want %d: gap, duplicate or reorder (first %v…)", k, i, from+k, is[:min(len(is), 10)])
		}
	}
}

// The reason Fabric exists: the real phoenix client with our JS helper
// disconnects, misses messages, reconnects, and gets exactly what it
// missed, in order, then live — also while a publisher keeps going.
func TestPhoenixJSResumesAfterDisconnect(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	opts := map[string]any{"reconnectAfterMs": 50, "rejoinAfterMs": 50}
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	res := p.JoinOpts("room:js", nil, map[string]any{"resumable": true})
	if res.Status != "ok" || !bytes.Contains(res.Response, []byte(`"epoch"`)) {
		t.Fatalf("join: %+v", res)
	}
	n := 0
	pub := func(k int) {
		for ; k > 0; k-- {
			f.publish("fabric.room.js", "m", []byte(fmt.Sprintf(`{"i":%d}`, n)))
			n++
		}
	}
	pub(5)
	contiguous(t, msgIs(t, collectMsgs(t, p, "room:js", "m", 5)), 0)

	// 1. Offline while 1,000 messages are published.
	p.Disconnect(0, "")
	pub(1000)
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	got := collectMsgs(t, p, "room:js", "m", 1000)
	contiguous(t, msgIs(t, got), 5)
	pub(5)
	contiguous(t, msgIs(t, collectMsgs(t, p, "room:js", "m", 5)), 1005)

	// 2. The same while a publisher keeps publishing through the rejoin.
	p.Disconnect(0, "")
	pub(500)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				pub(1)
				time.Sleep(time.Millisecond)
			}
		}
	}()
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	got = collectMsgs(t, p, "room:js", "m", 800)
	close(stop)
	wg.Wait()
	total := n - 1010
	got = append(got, collectMsgs(t, p, "room:js", "m", total-800)...)
	contiguous(t, msgIs(t, got), 1010)
	if extra := p.Drain(phxnode.IsMsg("room:js", "m")); len(extra) > 0 {
		t.Fatalf("%d duplicate deliveries after the end", len(extra))
	}
	if gaps := p.Drain(phxnode.IsEv("gap")); len(gaps) > 0 {
		t.Fatalf("gap reported: %v", gaps)
	}
}

// When history is gone the helper tells the app (never a silent gap).
func TestPhoenixJSGapIsReported(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"room": {History: true, MaxMsgsPerChannel: 20}}
		c.LeaveGrace = time.Millisecond
	})
	p := phxnode.Start(t)
	opts := map[string]any{"reconnectAfterMs": 50, "rejoinAfterMs": 50}
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	if res := p.JoinOpts("room:short", nil, map[string]any{"resumable": true}); res.Status != "ok" {
		t.Fatalf("join: %+v", res)
	}
	f.publish("fabric.room.short", "m", []byte(`{"i":0}`))
	collectMsgs(t, p, "room:short", "m", 1)
	p.Disconnect(0, "")
	// Let the gateway forget the channel (no member, tiny grace), then
	// publish past the channel's retention.
	eventually(t, wait, "channel dropped", func() bool { return f.Gateway().Stats().Hub.Channels == 0 })
	for i := 1; i <= 50; i++ {
		f.publish("fabric.room.short", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	gap := p.MustNext(wait, "gap event", phxnode.IsEv("gap"))
	if !bytes.Contains(gap.Raw, []byte(`"reason":"history_gone"`)) {
		t.Fatalf("gap: %s", gap)
	}
	if replayed := p.Drain(phxnode.IsMsg("room:short", "m")); len(replayed) > 0 {
		t.Fatalf("%d messages presented as continuous after a gap", len(replayed))
	}
	f.publish("fabric.room.short", "m", []byte(`{"i":51}`))
	if is := msgIs(t, collectMsgs(t, p, "room:short", "m", 1)); is[0] != 51 {
		t.Fatalf("live after gap: %v", is)
	}
}

// The stream is deleted (and Fabric recreates it, new epoch): the channel
// errors, phoenix.js rejoins by itself, and the helper reports
// epoch_changed instead of presenting the new stream as a continuation.
func TestPhoenixJSEpochChange(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, map[string]any{"reconnectAfterMs": 50, "rejoinAfterMs": 50}); err != nil {
		t.Fatal(err)
	}
	if res := p.JoinOpts("room:epoch", nil, map[string]any{"resumable": true}); res.Status != "ok" {
		t.Fatalf("join: %+v", res)
	}
	f.publish("fabric.room.epoch", "m", []byte(`{"i":0}`))
	collectMsgs(t, p, "room:epoch", "m", 1)
	js, _ := jetstream.New(f.nc)
	if err := js.DeleteStream(t.Context(), "FABRIC_room"); err != nil {
		t.Fatal(err)
	}
	p.MustNext(wait, "channel error", phxnode.OnTopic("chan_error", "room:epoch"))
	gap := p.MustNext(wait, "gap event", phxnode.IsEv("gap"))
	if !bytes.Contains(gap.Raw, []byte(`"reason":"epoch_changed"`)) {
		t.Fatalf("gap: %s", gap)
	}
	// Live delivery continues in the new epoch.
	eventually(t, wait, "rejoined", func() bool { return f.Gateway().Members("room:epoch") == 1 })
	f.publish("fabric.room.epoch", "m", []byte(`{"i":1}`))
	if is := msgIs(t, collectMsgs(t, p, "room:epoch", "m", 1)); is[0] != 1 {
		t.Fatalf("after epoch change: %v", is)
	}
}
