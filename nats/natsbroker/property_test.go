package natsbroker_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// Random sequences of publishes, purges (whole and subject, with seq,
// keep or neither), limit changes, deletes, moderation and recreations,
// applied to a real stream (nats.go calls, as the nats CLI makes them)
// and to the model (memory.Stream), which knows what was lost. After
// every few steps, resumes from every kind of position are checked:
//
//   - recovered ⇒ exactly the channel's stored messages after the offset
//     (less those a moderator removed), in order;
//   - a loss the model saw ⇒ not recovered, except for the documented
//     bound: a purge of one channel or a delete made around Fabric by an
//     operator who opted out of the deny settings;
//   - across a moderator's clear ⇒ history_cleared; from an older
//     incarnation ⇒ epoch_changed.
func TestHistoryProperty(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4}
	if testing.Short() {
		seeds = seeds[:2]
	}
	// FABRIC_PROPERTY_SEEDS=N runs N more seeds (a longer search).
	if n, _ := strconv.Atoi(os.Getenv("FABRIC_PROPERTY_SEEDS")); n > 0 {
		for i := range n {
			seeds = append(seeds, uint64(100+i))
		}
	}
	for _, opted := range []bool{false, true} {
		for _, seed := range seeds {
			t.Run(fmt.Sprintf("opted_out=%v/seed=%d", opted, seed), func(t *testing.T) {
				runProperty(t, seed, opted)
			})
		}
	}
}

func runProperty(t *testing.T, seed uint64, opted bool) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	ns := natsbroker.Stream{AllowPurge: opted, AllowDelete: opted}
	e := setupHistory(t, ns)
	model := memory.NewStream()
	model.Physical = opted
	channels := []string{"a", "b", "c"}
	stream := func() jetstream.Stream {
		st, err := e.js.Stream(ctx(t), "FABRIC_room")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	epochs := map[string]string{model.Epoch(): e.epoch(t)} // model epoch → real epoch
	var log []string
	step := func(format string, args ...any) { log = append(log, fmt.Sprintf(format, args...)) }
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s\nmodel: %s\nsteps:\n  %s", fmt.Sprintf(format, args...), model, strings.Join(log, "\n  "))
	}
	var stats struct{ recovered, told, conservative int }

	check := func() {
		t.Helper()
		// Settings changed by hand reach a gateway through the stream's
		// update advisory (or its 5 s re-read); wait for them here.
		e.b.Resync(ctx(t))
		last := model.Last()
		realEpoch := epochs[model.Epoch()]
		for _, ch := range channels[:2] {
			topic, subj := "room:"+ch, "fabric.room."+ch
			positions := []uint64{0, last}
			for range 6 {
				positions = append(positions, rng.Uint64N(last+1))
			}
			if model.MarkDeleted(topic) {
				continue // the documented bound of allow_delete
			}
			for _, pos := range positions {
				got, reason := replayAll(t, e.b, topic, broker.Position{Epoch: realEpoch, Offset: pos})
				ideal := model.Replay(topic, broker.Position{Epoch: model.Epoch(), Offset: pos})
				lost, cause := model.Lost(topic, pos)
				if reason != "" {
					stats.told++
					if ideal.Reason == "" {
						stats.conservative++
					}
					if ideal.Reason == broker.ReasonEpochChanged && reason != broker.ReasonEpochChanged {
						fail("%s from %d: %q, want epoch_changed", topic, pos, reason)
					}
					continue
				}
				stats.recovered++
				if want := model.Stored(topic, pos); !slices.Equal(got, want) {
					fail("%s from %d: recovered with %v, stored after it %v", topic, pos, got, want)
				}
				bound := cause == memory.CausePurge || cause == memory.CauseDelete
				if lost && !bound {
					fail("%s from %d: recovered across a loss (%s)", topic, pos, cause)
				}
				if ideal.Reason == broker.ReasonHistoryCleared {
					fail("%s from %d: recovered across a clear", topic, pos)
				}
				_ = subj
			}
		}
	}

	for i := 0; i < 60; i++ {
		ch := channels[rng.IntN(len(channels))]
		topic, subj := "room:"+ch, "fabric.room."+ch
		switch r := rng.IntN(100); {
		case r < 55:
			seq := e.jsPublish(t, subj, "m", `{}`)
			if want := model.Publish(topic); seq != want {
				fail("publish on %s: stream seq %d, model %d", topic, seq, want)
			}
			step("publish %s → %d", topic, seq)
		case r < 62:
			maxMsgs, maxPer := []int{0, 30, 12}[rng.IntN(3)], []int{0, 8, 4, 20}[rng.IntN(4)]
			st := stream()
			cfg := st.CachedInfo().Config
			cfg.MaxMsgs, cfg.MaxMsgsPerSubject = -1, -1
			if maxMsgs > 0 {
				cfg.MaxMsgs = int64(maxMsgs)
			}
			if maxPer > 0 {
				cfg.MaxMsgsPerSubject = int64(maxPer)
			}
			if _, err := e.js.UpdateStream(ctx(t), cfg); err != nil {
				fail("limits: %v", err)
			}
			model.SetLimits(maxMsgs, maxPer)
			step("limits max_msgs=%d per_channel=%d", maxMsgs, maxPer)
		case r < 72:
			var opts []jetstream.StreamPurgeOpt
			name := "whole"
			ptopic := ""
			if rng.IntN(2) == 0 {
				opts = append(opts, jetstream.WithPurgeSubject(subj))
				name, ptopic = subj, topic
			}
			var seq, keep uint64
			switch rng.IntN(3) {
			case 0:
				seq = rng.Uint64N(model.Last()+2) + 1
				opts = append(opts, jetstream.WithPurgeSequence(seq))
			case 1:
				keep = rng.Uint64N(6) + 1
				opts = append(opts, jetstream.WithPurgeKeep(keep))
			}
			err := stream().Purge(ctx(t), opts...)
			if !opted {
				if err == nil {
					fail("purge %s accepted on a denying stream", name)
				}
				step("purge %s refused", name)
				continue
			}
			if err != nil {
				fail("purge %s seq=%d keep=%d: %v", name, seq, keep, err)
			}
			model.Purge(ptopic, seq, keep)
			step("purge %s seq=%d keep=%d", name, seq, keep)
		case r < 77:
			seq := rng.Uint64N(model.Last()+1) + 1
			err := stream().DeleteMsg(ctx(t), seq)
			if !opted {
				if err == nil {
					fail("delete accepted on a denying stream")
				}
				continue
			}
			if err == nil {
				model.Delete(seq)
			}
			step("delete %d: %v", seq, err)
		case r < 85:
			if err := e.b.ClearChannel(ctx(t), topic); err != nil {
				fail("clear %s: %v", topic, err)
			}
			model.Clear(topic)
			step("clear %s", topic)
		case r < 95:
			stored := model.Stored(topic, 0)
			if len(stored) == 0 {
				continue
			}
			seq := stored[rng.IntN(len(stored))]
			if err := e.b.RemoveMessage(ctx(t), topic, seq); err != nil {
				fail("remove %s %d: %v", topic, seq, err)
			}
			model.Remove(topic, seq)
			step("remove %s %d", topic, seq)
		default:
			old := e.epoch(t)
			saved := stream().CachedInfo().Config
			if err := readd(t, e, saved); err != nil {
				fail("delete and re-add the stream: %v", err)
			}
			oldModel := model.Epoch()
			model.Recreate()
			waitEpochChange(t, e)
			epochs[model.Epoch()] = e.epoch(t)
			step("recreated from its saved config")
			p, err := e.b.Replay(ctx(t), "room:a", broker.Position{Epoch: old}, 10)
			if err != nil || p.Reason != broker.ReasonEpochChanged {
				fail("resume from the old incarnation: %q %v", p.Reason, err)
			}
			delete(epochs, oldModel)
		}
		if i%6 == 5 {
			check()
		}
	}
	check()
	t.Logf("resumes: %d recovered, %d told (%d where the model would have recovered)", stats.recovered, stats.told, stats.conservative)
}

// readd is `nats stream rm -f` then `nats stream add --config saved.json`.
// Two races are the server's and Fabric's, not the operator's mistake:
// the server may reopen the deleted incarnation's files for a create in
// the moment after its delete advisory (the new stream then holds old
// messages), and Fabric recreates a stream that stayed deleted for 2 s
// (the operator's add then finds the name taken). Either way the
// operator deletes and adds again, as this does.
func readd(t *testing.T, e henv, saved jetstream.StreamConfig) error {
	t.Helper()
	var err error
	for range 5 {
		if err = e.js.DeleteStream(ctx(t), "FABRIC_room"); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
		var st jetstream.Stream
		st, err = e.js.CreateStream(ctx(t), saved)
		if err == nil && st.CachedInfo().State.LastSeq == 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("re-added stream reopened old files (last seq %d)", st.CachedInfo().State.LastSeq)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}
