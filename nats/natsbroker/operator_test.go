package natsbroker_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// What operators do to a namespace's stream, through nats.go calls that
// are what the nats CLI sends, each checked against clients of the
// affected channel (room:b) and of an unaffected one (room:a) resuming
// from: their last delivered offset, their join position with no message
// received (the stream position when the channel was empty), and an offset
// that belongs to another channel.
//
// The checker: every recovered resume is followed by exactly the
// channel's stored messages after the offset (less those a moderator
// removed), in order; everything else says why.
func TestOperatorActions(t *testing.T) {
	type world struct {
		e       henv
		a, b    []uint64 // the channels' offsets, in order
		c       uint64   // room:c's one message, published first
		removed map[uint64]bool
	}
	type scenario struct {
		name string
		ns   natsbroker.Stream
		// act does what the operator does; it may return the reason the
		// affected channel's clients must get at every position ("" for
		// any outcome the checker accepts).
		act func(t *testing.T, w *world) (affected string, unaffected string)
	}
	purge := func(t *testing.T, w *world, opts ...jetstream.StreamPurgeOpt) {
		t.Helper()
		st, err := w.e.js.Stream(ctx(t), "FABRIC_room")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Purge(ctx(t), opts...); err != nil {
			t.Fatalf("purge: %v", err)
		}
	}
	scenarios := []scenario{
		{"recreated from its saved config", natsbroker.Stream{}, func(t *testing.T, w *world) (string, string) {
			st, _ := w.e.js.Stream(ctx(t), "FABRIC_room")
			saved := st.CachedInfo().Config
			if err := readd(t, w.e, saved); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 45; i++ { // past every old offset
				w.e.jsPublish(t, "fabric.room.b", "m", `{}`)
			}
			waitEpochChange(t, w.e)
			return broker.ReasonEpochChanged, broker.ReasonEpochChanged
		}},
		{"subject purge refused by default", natsbroker.Stream{}, func(t *testing.T, w *world) (string, string) {
			st, _ := w.e.js.Stream(ctx(t), "FABRIC_room")
			if err := st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room.b"), jetstream.WithPurgeSequence(w.b[10])); err == nil {
				t.Fatal("operator's subject purge accepted on a denying stream")
			}
			if err := st.DeleteMsg(ctx(t), w.b[3]); err == nil {
				t.Fatal("operator's delete accepted on a denying stream")
			}
			return "", ""
		}},
		{"subject purge with seq (opted out)", natsbroker.Stream{AllowPurge: true}, func(t *testing.T, w *world) (string, string) {
			purge(t, w, jetstream.WithPurgeSubject("fabric.room.b"), jetstream.WithPurgeSequence(w.b[10]))
			return "", ""
		}},
		{"subject purge with keep (opted out)", natsbroker.Stream{AllowPurge: true}, func(t *testing.T, w *world) (string, string) {
			purge(t, w, jetstream.WithPurgeSubject("fabric.room.b"), jetstream.WithPurgeKeep(5))
			return "", ""
		}},
		{"whole purge (opted out)", natsbroker.Stream{AllowPurge: true}, func(t *testing.T, w *world) (string, string) {
			purge(t, w)
			return broker.ReasonHistoryGone, broker.ReasonHistoryGone
		}},
		{"whole purge with keep (opted out)", natsbroker.Stream{AllowPurge: true}, func(t *testing.T, w *world) (string, string) {
			purge(t, w, jetstream.WithPurgeKeep(3))
			return "", ""
		}},
		{"per-channel limit overflow while away", natsbroker.Stream{MaxMsgsPerChannel: 25}, func(t *testing.T, w *world) (string, string) {
			for i := 0; i < 25; i++ {
				w.e.jsPublish(t, "fabric.room.b", "m", `{}`)
			}
			return broker.ReasonHistoryGone, ""
		}},
		{"channel clear", natsbroker.Stream{}, func(t *testing.T, w *world) (string, string) {
			if err := w.e.b.ClearChannel(ctx(t), "room:b"); err != nil {
				t.Fatal(err)
			}
			return broker.ReasonHistoryCleared, ""
		}},
		{"message removal", natsbroker.Stream{}, func(t *testing.T, w *world) (string, string) {
			for _, i := range []int{0, 12, 19} {
				if err := w.e.b.RemoveMessage(ctx(t), "room:b", w.b[i]); err != nil {
					t.Fatal(err)
				}
				w.removed[w.b[i]] = true
			}
			return "", ""
		}},
		{"message removal (opted out: bytes gone)", natsbroker.Stream{AllowDelete: true}, func(t *testing.T, w *world) (string, string) {
			for _, i := range []int{0, 12, 19} {
				if err := w.e.b.RemoveMessage(ctx(t), "room:b", w.b[i]); err != nil {
					t.Fatal(err)
				}
				w.removed[w.b[i]] = true
			}
			return "", ""
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			w := &world{e: setupHistory(t, sc.ns), removed: map[uint64]bool{}}
			epoch := w.e.epoch(t)
			w.c = w.e.jsPublish(t, "fabric.room.c", "m", `{}`)
			for i := 0; i < 20; i++ {
				w.a = append(w.a, w.e.jsPublish(t, "fabric.room.a", "m", fmt.Sprintf(`{"i":%d}`, i)))
				w.b = append(w.b, w.e.jsPublish(t, "fabric.room.b", "m", fmt.Sprintf(`{"i":%d}`, i)))
			}
			affected, unaffected := sc.act(t, w)
			for _, ch := range []struct {
				topic, subj string
				own, other  []uint64
				want        string
			}{
				{"room:b", "fabric.room.b", w.b, w.a, affected},
				{"room:a", "fabric.room.a", w.a, w.b, unaffected},
			} {
				for _, pos := range []struct {
					name string
					off  uint64
				}{{"last delivered", ch.own[7]}, {"join position", w.c}, {"another channel's offset", ch.other[4]}} {
					got, reason := replayAll(t, w.e.b, ch.topic, broker.Position{Epoch: epoch, Offset: pos.off})
					if ch.want != "" && reason != ch.want {
						t.Errorf("%s from %s (%d): reason %q, want %q", ch.topic, pos.name, pos.off, reason, ch.want)
						continue
					}
					if reason != "" {
						continue // told plainly
					}
					want := storedAfter(t, w.e, ch.subj, pos.off, w.removed)
					if !slices.Equal(got, want) {
						t.Errorf("%s from %s (%d): recovered with %v, stored after it: %v", ch.topic, pos.name, pos.off, got, want)
					}
				}
			}
		})
	}
}

// replayAll pages through a whole resume, as the hub does.
func replayAll(t *testing.T, b *natsbroker.Broker, topic string, from broker.Position) ([]uint64, string) {
	t.Helper()
	var got []uint64
	for range 100 {
		p, err := b.Replay(ctx(t), topic, from, 8)
		if err != nil {
			t.Fatal(err)
		}
		if p.Reason != "" {
			return nil, p.Reason
		}
		for _, m := range p.Messages {
			if m.Prev != from.Offset && len(got) > 0 && m.Prev < got[len(got)-1] {
				t.Fatalf("broken chain at %d (prev %d)", m.Offset, m.Prev)
			}
			got = append(got, m.Offset)
			from.Offset = m.Offset
		}
		if p.Done {
			return got, ""
		}
	}
	t.Fatal("replay never done")
	return nil, ""
}

// storedAfter reads the stream itself: the offsets of subj's messages
// after off, less those a moderator removed.
func storedAfter(t *testing.T, e henv, subj string, off uint64, removed map[uint64]bool) []uint64 {
	t.Helper()
	st, err := e.js.Stream(ctx(t), "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for seq := off + 1; seq <= st.CachedInfo().State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx(t), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject == subj && !removed[seq] {
			out = append(out, seq)
		}
	}
	return out
}

func waitEpochChange(t *testing.T, e henv) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := e.js.Stream(ctx(t), "FABRIC_room")
		if err == nil {
			md := st.CachedInfo().Config.Metadata
			created := fmt.Sprint(st.CachedInfo().Created.UnixNano())
			if md["fabric_created"] == created {
				if p, err := e.b.Replay(ctx(t), "room:zz", broker.Position{Epoch: md["fabric_epoch"]}, 1); err == nil && p.Reason != broker.ReasonEpochChanged {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the broker never adopted the new incarnation")
}
