package natsbroker_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natsembed"
	"github.com/fabric-rt/fabric/nats/natstest"
)

type henv struct {
	env
	js  jetstream.JetStream
	srv *natsembed.Server
}

func setupHistory(t *testing.T, ns natsbroker.Stream, mutate ...func(*natsbroker.Config)) henv {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	cfg := natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": ns}}
	for _, m := range mutate {
		m(&cfg)
	}
	b, err := natsbroker.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	if err := b.EnsureStreams(ctx(t)); err != nil {
		t.Fatal(err)
	}
	pub := natstest.Connect(t, s)
	js, _ := jetstream.New(pub)
	return henv{env: env{b: b, nc: nc, pub: pub}, js: js, srv: s}
}

// jsPublish stores a message the way a service that needs history does.
func (e henv) jsPublish(t *testing.T, subj, event, body string) uint64 {
	t.Helper()
	m := nats.NewMsg(subj)
	m.Header.Set("Fabric-Event", event)
	m.Data = []byte(body)
	ack, err := e.js.PublishMsg(ctx(t), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

func (e henv) epoch(t *testing.T) string {
	t.Helper()
	st, err := e.js.Stream(ctx(t), "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().Config.Metadata["fabric_epoch"]
}

func TestEnsureStreamsIdempotentAndConcurrent(t *testing.T) {
	s := natstest.RunServer(t)
	nss := map[string]natsbroker.Stream{"room": {MaxAge: time.Hour, MaxMsgsPerChannel: 100}}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		nc := natstest.Connect(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := natsbroker.New(nc, natsbroker.Config{Streams: nss})
			if err == nil {
				err = b.EnsureStreams(context.Background())
				b.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("gateway start: %v", err)
		}
	}
	js, _ := jetstream.New(natstest.Connect(t, s))
	st, err := js.Stream(ctx(t), "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	if !c.AllowDirect || !c.DenyDelete || c.RePublish == nil || c.RePublish.Destination != "fabric_live.>" ||
		c.MaxMsgsPerSubject != 100 || c.MaxAge != time.Hour || c.Metadata["fabric_epoch"] == "" {
		t.Fatalf("stream config: %+v", c)
	}
	if got := c.Subjects; len(got) != 2 || got[0] != "fabric.room" || got[1] != "fabric.room.>" {
		t.Fatalf("subjects %v", got)
	}
}

func TestNamespaceConfigErrors(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	for _, nss := range []map[string]natsbroker.Stream{
		{"bad.name": {}},
		{"room": {MaxAge: -1}},
		{"room": {Replicas: 6}},
	} {
		if _, err := natsbroker.New(nc, natsbroker.Config{Streams: nss}); err == nil {
			t.Fatalf("accepted %v", nss)
		}
	}
	// A config the server rejects is an error at start, not a warning.
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {Replicas: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close) // stops its drop watcher
	if err := b.EnsureStreams(ctx(t)); err == nil {
		t.Fatal("R3 on a single server was accepted")
	}
}

func TestLiveMessagesCarryOffsetsAndChain(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	before := e.jsPublish(t, "fabric.room.lobby", "old", `{}`)
	sub, ch := collect(t, e.env, "room:lobby")
	head := sub.(broker.HeadSubscription).Head()
	if head.Offset != before || head.Epoch == "" || head.Epoch != e.epoch(t) {
		t.Fatalf("head %+v, want offset %d", head, before)
	}
	e.jsPublish(t, "fabric.room.other", "x", `{}`) // interleaved: offsets skip
	s1 := e.jsPublish(t, "fabric.room.lobby", "new_msg", `{"n":1}`)
	// A core publish lands in the stream too (best effort for the publisher).
	publish(t, e.pub, &nats.Msg{Subject: "fabric.room.lobby", Data: []byte(`{"n":2}`), Header: nats.Header{"Fabric-Event": {"new_msg"}}})
	m1, m2 := recv(t, ch), recv(t, ch)
	if m1.Offset != s1 || m1.Prev != before || m1.Event != "new_msg" || string(m1.Payload) != `{"n":1}` {
		t.Fatalf("m1 %+v", m1)
	}
	if m2.Offset <= s1 || m2.Prev != s1 {
		t.Fatalf("m2 %+v", m2)
	}
}

func TestLiveGapsAreFilled(t *testing.T) {
	// A tiny client-side buffer and a slow handler make nats.go drop live
	// messages; the chain check must refetch them from the stream.
	e := setupHistory(t, natsbroker.Stream{}, func(c *natsbroker.Config) {
		c.PendingMsgsLimit = 2
	})
	got := make(chan *broker.Message, 1000)
	sub, err := e.b.Subscribe(ctx(t), "room:gap", func(m *broker.Message) {
		// Slower than a stored publish's round trip even on a loaded
		// machine, so the queue of 2 overflows.
		time.Sleep(5 * time.Millisecond)
		got <- m
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	const n = 200
	var seqs []uint64
	for i := 0; i < n; i++ {
		seqs = append(seqs, e.jsPublish(t, "fabric.room.gap", "m", fmt.Sprintf(`{"i":%d}`, i)))
	}
	recvChain(t, got, sub.(broker.HeadSubscription).Head().Offset, seqs[:n])
	if e.b.SlowConsumerDrops() == 0 {
		t.Fatal("test did not provoke any drop; it proves nothing")
	}
}

func TestReplay(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{MaxMsgsPerChannel: 50, AllowPurge: true})
	epoch := e.epoch(t)
	var lobby []uint64
	for i := 0; i < 20; i++ {
		lobby = append(lobby, e.jsPublish(t, "fabric.room.lobby", "m", fmt.Sprintf(`{"i":%d}`, i)))
		e.jsPublish(t, "fabric.room.other", "m", `{}`)
	}
	replay := func(from uint64, max int) broker.Page {
		t.Helper()
		p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: from}, max)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// (a) a valid anchor: exactly the messages after it, chained.
	p := replay(lobby[4], 100)
	if p.Reason != "" || len(p.Messages) != 15 || !p.Done {
		t.Fatalf("page: reason %q, %d messages, done %v", p.Reason, len(p.Messages), p.Done)
	}
	for i, m := range p.Messages {
		if m.Offset != lobby[5+i] || (i > 0 && m.Prev != lobby[4+i]) || (i == 0 && m.Prev != lobby[4]) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	// Paging.
	p = replay(lobby[4], 10)
	if len(p.Messages) != 10 || p.Done {
		t.Fatalf("paged: %d messages, done %v", len(p.Messages), p.Done)
	}
	// (b) offset == last: nothing to replay.
	if p = replay(lobby[19], 10); p.Reason != "" || len(p.Messages) != 0 || !p.Done {
		t.Fatalf("at head: %+v", p)
	}
	// A position between messages (another channel's sequence) is fine.
	if p = replay(lobby[4]+1, 100); p.Reason != "" || len(p.Messages) != 15 {
		t.Fatalf("position: %q %d", p.Reason, len(p.Messages))
	}
	// Position 0 while the stream never dropped anything: everything.
	if p = replay(0, 100); p.Reason != "" || len(p.Messages) != 20 {
		t.Fatalf("from zero: %q %d", p.Reason, len(p.Messages))
	}
	// (d) wrong epoch.
	if p, _ := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: "other", Offset: lobby[4]}, 10); p.Reason != broker.ReasonEpochChanged {
		t.Fatalf("wrong epoch: %q", p.Reason)
	}
	// (e) beyond the head.
	if p = replay(1_000_000, 10); p.Reason != broker.ReasonOffsetAhead {
		t.Fatalf("ahead: %q", p.Reason)
	}
	// A purge of one channel (subject-filtered) makes only that channel's
	// old offsets history_gone; the other channel is untouched.
	st, _ := e.js.Stream(ctx(t), "FABRIC_room")
	if err := st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room.other")); err != nil {
		t.Fatal(err)
	}
	if p = replay(lobby[4], 100); p.Reason != "" || len(p.Messages) != 15 {
		t.Fatalf("lobby after purging other: %q %d", p.Reason, len(p.Messages))
	}
	if err := st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room.lobby"), jetstream.WithPurgeKeep(5)); err != nil {
		t.Fatal(err)
	}
	// (c) the anchor was removed: history_gone, never a silent gap.
	if p = replay(lobby[4], 100); p.Reason != broker.ReasonHistoryGone {
		t.Fatalf("purged anchor: %q %d", p.Reason, len(p.Messages))
	}
	if p = replay(lobby[16], 100); p.Reason != "" || len(p.Messages) != 3 {
		t.Fatalf("kept anchor: %q %d", p.Reason, len(p.Messages))
	}
	if p = replay(0, 100); p.Reason != broker.ReasonHistoryGone {
		t.Fatalf("from zero after purge: %q", p.Reason)
	}
}

func TestReplayPerChannelLimit(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{MaxMsgsPerChannel: 5})
	epoch := e.epoch(t)
	pos := e.jsPublish(t, "fabric.room.other", "m", `{}`) // a position, not a lobby message
	for i := 0; i < 8; i++ {
		e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	}
	// Eight lobby messages after pos, only five kept: the channel's own
	// limit cut messages after the client's position.
	p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: epoch, Offset: pos}, 100)
	if err != nil || p.Reason != broker.ReasonHistoryGone {
		t.Fatalf("per-channel limit: %q %v", p.Reason, err)
	}
}

func TestStreamRecreatedChangesEpoch(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	old := e.epoch(t)
	e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	sub, ch := collect(t, e.env, "room:lobby")
	defer sub.Unsubscribe()
	if err := e.js.DeleteStream(ctx(t), "FABRIC_room"); err != nil {
		t.Fatal(err)
	}
	// The broker recreates the stream with a new epoch and resets the
	// channel: its clients must resume anew.
	m := recv(t, ch)
	if !m.Reset || m.Epoch == old || m.Epoch == "" {
		t.Fatalf("after delete: %+v (old epoch %s)", m, old)
	}
	if e.epoch(t) != m.Epoch {
		t.Fatalf("stream epoch %s, reset epoch %s", e.epoch(t), m.Epoch)
	}
	p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: old, Offset: 1}, 10)
	if err != nil || p.Reason != broker.ReasonEpochChanged {
		t.Fatalf("old epoch: %q %v", p.Reason, err)
	}
	// Live delivery continues in the new epoch.
	s := e.jsPublish(t, "fabric.room.lobby", "after", `{}`)
	if m := recv(t, ch); m.Offset != s || m.Event != "after" {
		t.Fatalf("after recreate: %+v", m)
	}
}

// A persistent namespace's stream has a byte limit unless its config says
// -1: without one, large pushes to many channels fill the disk until
// max_age catches up.
func TestStreamMaxBytesDefault(t *testing.T) {
	for _, tc := range []struct {
		set, want int64
	}{{0, natsbroker.DefaultStreamMaxBytes}, {-1, -1}, {5 << 20, 5 << 20}} {
		e := setupHistory(t, natsbroker.Stream{MaxBytes: tc.set})
		st, err := e.js.Stream(ctx(t), "FABRIC_room")
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.MaxBytes; got != tc.want {
			t.Fatalf("max_bytes %d: stream MaxBytes %d, want %d", tc.set, got, tc.want)
		}
	}
	nc := natstest.Connect(t, natstest.RunServer(t))
	if _, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {MaxBytes: -2}}}); err == nil {
		t.Fatal("max_bytes -2 accepted")
	}
}
