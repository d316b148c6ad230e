package natsbroker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// What a backup/restore or a migration does with the nats CLI:
// `nats stream info -j` → save .config → `nats stream rm -f` → `nats stream
// add --config saved.json`. The saved config carries Fabric's metadata
// (fabric_epoch, fabric_created), yet the new incarnation must get an epoch
// of its own, and a subscriber connected throughout is told (Reset) and
// then receives the new incarnation's messages: never a silent stall.
func TestStreamReaddedFromSavedConfigGetsNewEpoch(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	old := e.epoch(t)
	for i := 0; i < 5; i++ {
		e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	}
	sub, ch := collect(t, e.env, "room:lobby")
	defer sub.Unsubscribe()
	st, err := e.js.Stream(ctx(t), "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	saved := st.CachedInfo().Config
	if saved.Metadata["fabric_epoch"] != old || saved.Metadata["fabric_created"] == "" {
		t.Fatalf("saved metadata %v", saved.Metadata)
	}
	if err := e.js.DeleteStream(ctx(t), "FABRIC_room"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the server removes the old files after its advisory
	if _, err := e.js.CreateStream(ctx(t), saved); err != nil {
		t.Fatalf("re-add from the saved config: %v", err)
	}
	// Sequences start from 1 again: the new incarnation's messages are
	// at or below the old last offset.
	var seqs []uint64
	for i := 0; i < 3; i++ {
		seqs = append(seqs, e.jsPublish(t, "fabric.room.lobby", "new", `{}`))
	}
	m := recv(t, ch)
	if !m.Reset || m.Epoch == old || m.Epoch == "" {
		t.Fatalf("after re-add: %+v (old epoch %s)", m, old)
	}
	// The reset position is the new incarnation's head when the broker
	// noticed the re-add, which may be after some of the "new" messages:
	// what follows is live in the new incarnation, chained from it.
	next := e.jsPublish(t, "fabric.room.lobby", "after", `{}`)
	for prev := m.Offset; ; {
		n := recv(t, ch)
		if n.Reset || n.Prev != prev || n.Offset > next {
			t.Fatalf("after reset at %d: %+v, want prev %d (after at %d)", m.Offset, n, prev, next)
		}
		if n.Offset == next {
			break
		}
		prev = n.Offset
	}
	// Resumes from the old incarnation are told so, at any offset.
	for _, off := range []uint64{0, 2, 5, seqs[0]} {
		p, err := e.b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: old, Offset: off}, 10)
		if err != nil || p.Reason != broker.ReasonEpochChanged {
			t.Fatalf("old epoch, offset %d: %q %v", off, p.Reason, err)
		}
	}
	// Fabric recorded the new incarnation in the metadata, for gateways
	// of every version.
	if got := e.epoch(t); got != m.Epoch && got == old {
		t.Fatalf("metadata epoch %s still the old one", got)
	}
}

// Fabric owns the settings delivery depends on and leaves a limit changed
// by hand alone until the namespace config changes that limit itself.
func TestEnsureStreamsKeepsHandEditedLimits(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{MaxMsgsPerChannel: 100})
	st, err := e.js.Stream(ctx(t), "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.DenyPurge || !cfg.DenyDelete {
		t.Fatalf("deny settings off by default: %+v", cfg)
	}
	epoch := cfg.Metadata["fabric_epoch"]
	cfg.MaxMsgsPerSubject = 7 // `nats stream edit --max-msgs-per-subject 7`
	cfg.RePublish = nil       // and something Fabric owns
	if _, err := e.js.UpdateStream(ctx(t), cfg); err != nil {
		t.Fatal(err)
	}
	restart := func(ns natsbroker.Stream) {
		t.Helper()
		b, err := natsbroker.New(e.pub, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": ns}})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.EnsureStreams(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	restart(natsbroker.Stream{MaxMsgsPerChannel: 100})
	st, _ = e.js.Stream(ctx(t), "FABRIC_room")
	got := st.CachedInfo().Config
	if got.MaxMsgsPerSubject != 7 || got.RePublish == nil || got.Metadata["fabric_epoch"] != epoch {
		t.Fatalf("after restart with the same config: per-subject %d, republish %v, epoch %s (was %s)",
			got.MaxMsgsPerSubject, got.RePublish, got.Metadata["fabric_epoch"], epoch)
	}
	restart(natsbroker.Stream{MaxMsgsPerChannel: 200})
	st, _ = e.js.Stream(ctx(t), "FABRIC_room")
	if got := st.CachedInfo().Config.MaxMsgsPerSubject; got != 200 {
		t.Fatalf("config changed its limit: stream per-subject %d, want 200", got)
	}
	// Opting out of the deny settings on a stream that has them cannot
	// work (JetStream cannot lift them): a clear error at start.
	b, err := natsbroker.New(e.pub, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {AllowPurge: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx(t)); err == nil || !strings.Contains(err.Error(), "allow_purge") {
		t.Fatalf("allow_purge on a denying stream: %v", err)
	}
}

// A stream written by a gateway of an earlier version (fabric_epoch, no
// fabric_created) keeps its epoch: no epoch_changed during an upgrade.
func TestLegacyEpochKept(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	st, _ := e.js.Stream(ctx(t), "FABRIC_room")
	cfg := st.CachedInfo().Config
	cfg.Metadata = map[string]string{"fabric_epoch": "legacyepoch"}
	if _, err := e.js.UpdateStream(ctx(t), cfg); err != nil {
		t.Fatal(err)
	}
	b, err := natsbroker.New(e.pub, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {}}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStreams(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := e.epoch(t); got != "legacyepoch" {
		t.Fatalf("epoch %q, want the legacy one kept", got)
	}
	p, err := b.Replay(ctx(t), "room:lobby", broker.Position{Epoch: "legacyepoch"}, 10)
	if err != nil || p.Reason != "" {
		t.Fatalf("resume in the legacy epoch: %q %v", p.Reason, err)
	}
}
