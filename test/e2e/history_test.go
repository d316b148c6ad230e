package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

type position struct {
	Epoch     string `json:"epoch"`
	Offset    uint64 `json:"offset,string"`
	Recovered *bool  `json:"recovered"`
	Reason    string `json:"reason"`
}

func joinPos(t *testing.T, c *phxclient.Client, topic string, params any) position {
	t.Helper()
	status, resp, err := c.JoinWait(topic, params, wait)
	if err != nil || status != "ok" {
		t.Fatalf("join %s: %s %s %v", topic, status, resp, err)
	}
	var p position
	if err := json.Unmarshal(resp, &p); err != nil || p.Epoch == "" {
		t.Fatalf("join reply %s: %v", resp, err)
	}
	return p
}

// jsPublish stores a message with a JetStream publish (what a service that
// needs history does) and returns its offset.
func (f *fabric) jsPublish(subject, event, body string) uint64 {
	f.t.Helper()
	js, _ := jetstream.New(f.nc)
	m := nats.NewMsg(subject)
	m.Header.Set("Fabric-Event", event)
	m.Data = []byte(body)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		f.t.Fatal(err)
	}
	return ack.Sequence
}

// nextN reads n messages of event on topic and returns their payload "i"
// fields and offsets.
func nextN(t *testing.T, c *phxclient.Client, topic, event string, n int) ([]int, []uint64) {
	t.Helper()
	var is []int
	var offs []uint64
	for len(is) < n {
		m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == event })
		if err != nil {
			t.Fatalf("after %d of %d %s messages: %v", len(is), n, event, err)
		}
		var p struct{ I int }
		json.Unmarshal(m.Payload, &p)
		off, _ := strconv.ParseUint(m.Ref.S, 10, 64)
		is = append(is, p.I)
		offs = append(offs, off)
	}
	return is, offs
}

// At the wire: every resume outcome a client can see.
func TestResumeOutcomes(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"room": {History: true, MaxMsgsPerChannel: 10}}
	})
	c := f.dial(phoenix.V2, phxclient.Options{})
	fresh := joinPos(t, c, "room:r", nil)
	if fresh.Recovered != nil {
		t.Fatalf("a fresh join says recovered: %+v", fresh)
	}
	var offs []uint64
	for i := 0; i < 5; i++ {
		offs = append(offs, f.jsPublish("fabric.room.r", "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	if _, got := nextN(t, c, "room:r", "m", 5); got[4] != offs[4] {
		t.Fatalf("live offsets %v, published %v", got, offs)
	}

	// (a) a valid offset: exactly the missed messages, in order.
	c2 := f.dial(phoenix.V2, phxclient.Options{})
	p := joinPos(t, c2, "room:r", map[string]any{"epoch": fresh.Epoch, "offset": offs[1]})
	if p.Recovered == nil || !*p.Recovered {
		t.Fatalf("resume from %d: %+v", offs[1], p)
	}
	is, got := nextN(t, c2, "room:r", "m", 3)
	if fmt.Sprint(is) != "[2 3 4]" || got[0] != offs[2] {
		t.Fatalf("replayed %v at %v", is, got)
	}
	// (b) offset == head: recovered, nothing replayed; a string offset works too.
	c3 := f.dial(phoenix.V2, phxclient.Options{})
	p = joinPos(t, c3, "room:r", map[string]any{"epoch": fresh.Epoch, "offset": strconv.FormatUint(offs[4], 10)})
	if p.Recovered == nil || !*p.Recovered || p.Offset != offs[4] {
		t.Fatalf("resume at head: %+v", p)
	}
	f.jsPublish("fabric.room.r", "m", `{"i":5}`)
	if is, _ := nextN(t, c3, "room:r", "m", 1); is[0] != 5 {
		t.Fatalf("after resume at head got %v", is)
	}
	// (c) older than retention (10 per channel): history_gone, and the
	// client is attached at the live head. (A channel this gateway holds in
	// memory could still serve it exactly, so use one it does not hold.)
	var old []uint64
	for i := 0; i < 30; i++ {
		old = append(old, f.jsPublish("fabric.room.cold", "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	c4 := f.dial(phoenix.V2, phxclient.Options{})
	p = joinPos(t, c4, "room:cold", map[string]any{"epoch": fresh.Epoch, "offset": old[0]})
	if p.Recovered == nil || *p.Recovered || p.Reason != "history_gone" || p.Offset != old[29] {
		t.Fatalf("resume past retention: %+v", p)
	}
	// Inside retention on the same cold channel: recovered from the stream.
	p = joinPos(t, f.dial(phoenix.V2, phxclient.Options{}), "room:cold", map[string]any{"epoch": fresh.Epoch, "offset": old[25]})
	if p.Recovered == nil || !*p.Recovered {
		t.Fatalf("resume inside retention: %+v", p)
	}
	// (d) wrong epoch.
	p = joinPos(t, f.dial(phoenix.V2, phxclient.Options{}), "room:r", map[string]any{"epoch": "nope", "offset": offs[4]})
	if p.Recovered == nil || *p.Recovered || p.Reason != "epoch_changed" || p.Epoch != fresh.Epoch {
		t.Fatalf("wrong epoch: %+v", p)
	}
	// (e) beyond the head.
	p = joinPos(t, f.dial(phoenix.V2, phxclient.Options{}), "room:r", map[string]any{"epoch": fresh.Epoch, "offset": 1 << 40})
	if p.Recovered == nil || *p.Recovered || p.Reason != "offset_ahead" {
		t.Fatalf("offset ahead: %+v", p)
	}
	// Malformed resume params are a bad request, not a silent fresh join.
	status, resp, _ := f.dial(phoenix.V2, phxclient.Options{}).JoinWait("room:r", map[string]any{"epoch": fresh.Epoch, "offset": -1}, wait)
	if status != "error" || string(resp) != `{"reason":"bad_request"}` {
		t.Fatalf("negative offset: %s %s", status, resp)
	}
	// Ephemeral namespaces: no position, null refs, like Phoenix.
	status, resp, _ = c.JoinWait("chat:x", nil, wait)
	if status != "ok" || string(resp) != `{}` {
		t.Fatalf("ephemeral join: %s %s", status, resp)
	}
}

// A long gap is paged from the stream with bounded memory, and the handover
// to live delivery has no gap and no duplicate while publishing continues.
// The client is the Go client resuming from a saved position.
func TestResumeLongGapWhilePublishing(t *testing.T) {
	f := startFabric(t, nil)
	first := goDial(t, f.socketURL())
	start, ok := goJoin(t, first, "room:busy").Position()
	if !ok {
		t.Fatal("no position after joining room:busy")
	}
	first.Close()

	const missed = 3000
	for i := 0; i < missed; i++ {
		f.publish("fabric.room.busy", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		i := missed
		defer func() { done <- i }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			f.publish("fabric.room.busy", "m", []byte(fmt.Sprintf(`{"i":%d}`, i)))
			i++
			time.Sleep(200 * time.Microsecond)
		}
	}()
	var in inbox
	resumed := make(chan phx.Resume, 1)
	goJoin(t, goDial(t, f.socketURL()), "room:busy", phx.ResumeFrom(start),
		phx.On("m", in.add), phx.OnResume(func(r phx.Resume) { resumed <- r }))
	if r := nextResume(t, resumed); !r.Recovered {
		t.Fatalf("resume: %+v", r)
	}
	in.waitN(t, missed+500)
	close(stop)
	total := <-done
	msgs := in.waitN(t, total)
	for k, m := range msgs {
		var p struct{ I int }
		json.Unmarshal(m.Payload, &p)
		if p.I != k {
			t.Fatalf("message %d has i=%d: gap, duplicate or reorder", k, p.I)
		}
		if k > 0 && m.Offset <= msgs[k-1].Offset {
			t.Fatalf("offsets not increasing at %d: %d then %d", k, msgs[k-1].Offset, m.Offset)
		}
	}
	if st := f.Gateway().Stats().Hub; st.Replayed < missed {
		t.Fatalf("replayed %d, want at least %d", st.Replayed, missed)
	}
}

// A gateway restart: the client resumes against the new process (whose
// ring is empty) from the stream, with nothing lost.
func TestResumeAfterGatewayRestart(t *testing.T) {
	f := startFabric(t, nil)
	// A second gateway on the first one's NATS, like a fleet member.
	g2cfg := app.Config{Listen: "127.0.0.1:0", OpsListen: "off", NATSURL: f.NATSURL(), LeaveGrace: 50 * time.Millisecond}
	g2, err := app.Start(g2cfg)
	if err != nil {
		t.Fatal(err)
	}
	var in inbox
	ch := goJoin(t, goDial(t, fmt.Sprintf("ws://%s/socket", g2.HTTPAddr())), "room:fleet", phx.On("m", in.add))
	for i := 0; i < 10; i++ {
		f.jsPublish("fabric.room.fleet", "m", fmt.Sprintf(`{"i":%d}`, i))
	}
	in.waitN(t, 10)
	saved, _ := ch.Position()
	// Gateway 2 goes away; messages keep coming.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	g2.Shutdown(ctx)
	cancel()
	for i := 10; i < 20; i++ {
		f.jsPublish("fabric.room.fleet", "m", fmt.Sprintf(`{"i":%d}`, i))
	}
	// The client resumes on the other gateway with its last position.
	var after inbox
	resumed := make(chan phx.Resume, 1)
	goJoin(t, goDial(t, f.socketURL()), "room:fleet", phx.ResumeFrom(saved),
		phx.On("m", after.add), phx.OnResume(func(r phx.Resume) { resumed <- r }))
	if r := nextResume(t, resumed); !r.Recovered {
		t.Fatalf("resume on the other gateway: %+v", r)
	}
	var is []int
	for _, m := range after.waitN(t, 10) {
		var p struct{ I int }
		json.Unmarshal(m.Payload, &p)
		is = append(is, p.I)
	}
	if fmt.Sprint(is) != "[10 11 12 13 14 15 16 17 18 19]" {
		t.Fatalf("resumed %v", is)
	}
}
