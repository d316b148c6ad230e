package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/nats/wire"
)

// Moderation (control.Moderator): clearing a channel's history and
// removing one message.
//
// Each operation stores a mark in the namespace's stream, on the channel's
// mark subject <prefix>.<ns>.=3A.<rest> (Map never writes the token "=3A",
// an escaped ':', so no topic has that subject). Every mark is a snapshot
// of the channel's whole moderation state (the latest clear, the offsets
// removed and still stored), written with JetStream's expected last
// sequence per subject so that concurrent moderators never lose each
// other's work. So only the latest mark matters:
//
//   - every reader obeys it: a resume from before the latest clear is
//     recovered:false with history_cleared, removed messages are skipped;
//   - RePublish sends it to every gateway at once (fabric_live.…), which
//     resets the channel there: its ring is dropped and its clients
//     rejoin, so nothing cleared or removed is served from memory;
//   - retention never drops it before what it covers: age, bytes and the
//     stream's message limit cut front-first, it is stored after what it
//     covers, and the per-channel limit, which does cut marks, keeps the
//     newest (older marks are redundant).
//
// The bytes are removed too when the stream allows it (allow_purge,
// allow_delete): with the deny settings JetStream refuses every purge and
// delete, Fabric's included (see ownSettings), and the content stays on
// disk, never served, until retention drops it.

// Mark header values (wire.HeaderMod) and the mark subject token.
const (
	modClear  = "clear"
	modRemove = "remove"
	markToken = "=3A"
)

// markState is a mark's body.
type markState struct {
	// Cleared is the sequence of the latest clear's mark, when a later
	// mark carries it forward (a clear's own mark has Clear instead).
	Cleared uint64 `json:"cleared,omitempty"`
	Clear   bool   `json:"clear,omitempty"`
	// Removed lists the offsets a moderator removed that may still be
	// stored.
	Removed []uint64 `json:"removed,omitempty"`
}

// ErrNoMessage is returned by RemoveMessage when the topic has no stored
// message at the offset.
var ErrNoMessage = fmt.Errorf("natsbroker: no message of this topic at that offset (%w)", control.ErrNotFound)

// ErrNoHistory is returned by moderation on a topic whose namespace keeps
// no history.
var ErrNoHistory = errors.New("natsbroker: topic has no history")

var _ control.Moderator = (*Broker)(nil)

// NewModerator returns a control.Moderator on nc for a tool that is not a
// gateway (fabric channel): it finds a topic's stream by Fabric's naming
// (FABRIC_<namespace>) rather than from a namespace config. The caller
// owns nc.
func NewModerator(nc *nats.Conn, prefix string) (control.Moderator, error) {
	b, err := New(nc, Config{Prefix: prefix})
	if err != nil {
		return nil, err
	}
	b.standalone = true
	return b, nil
}

// markSubject is the subject of the marks of the channel stored on subj.
func (b *Broker) markSubject(ns, subj string) string {
	base := b.prefix + "." + ns
	return base + "." + markToken + subj[len(base):]
}

// target resolves topic to its stream and subjects: from the configured
// namespaces in a gateway, from the naming convention (and the stream's
// existence) in a standalone moderator.
func (b *Broker) target(ctx context.Context, topic string) (stream, subj, marks string, err error) {
	subj, err = b.subject(topic)
	if err != nil {
		return "", "", "", err
	}
	ns, _, _ := strings.Cut(topic, ":")
	if n := b.namespaceOf(topic); n != nil {
		return n.stream, subj, b.markSubject(ns, subj), nil
	}
	if !b.standalone {
		return "", "", "", fmt.Errorf("%w: %q", ErrNoHistory, topic)
	}
	stream = wire.StreamName(ns)
	if _, err := b.js.Stream(ctx, stream); errors.Is(err, jetstream.ErrStreamNotFound) {
		return "", "", "", fmt.Errorf("%w: %q (no stream %s)", ErrNoHistory, topic, stream)
	} else if err != nil {
		return "", "", "", err
	}
	return stream, subj, b.markSubject(ns, subj), nil
}

// ClearChannel implements control.Moderator: every message of topic stored
// now is cleared. It returns once the mark is stored (every gateway gets
// it through RePublish) and, where the stream allows purges, the bytes are
// gone.
func (b *Broker) ClearChannel(ctx context.Context, topic string) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	stream, subj, marks, err := b.target(ctx, topic)
	if err != nil {
		return err
	}
	var last uint64
	err = b.updateMarks(ctx, stream, subj, marks, modClear, func(st *markState) error {
		res, err := b.directGet(ctx, stream, directReq{LastBySubj: subj})
		if err != nil {
			return err
		}
		last = 0
		if !res.notFound {
			last = seqOf(res.msgs[0])
		}
		st.Clear, st.Cleared, st.Removed = true, 0, nil
		return nil
	}, func() uint64 { return last })
	if err != nil || last == 0 {
		return err
	}
	st, err := b.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	if st.CachedInfo().Config.DenyPurge {
		return nil
	}
	// Up to the covered offset only: a message stored since is not
	// covered by the mark, so it must not go either.
	return st.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(last+1))
}

// RemoveMessage implements control.Moderator.
func (b *Broker) RemoveMessage(ctx context.Context, topic string, offset uint64) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	stream, subj, marks, err := b.target(ctx, topic)
	if err != nil {
		return err
	}
	if offset == 0 {
		return fmt.Errorf("%w: offset 0", ErrNoMessage)
	}
	res, err := b.directGet(ctx, stream, directReq{Seq: offset})
	if err != nil {
		return err
	}
	if res.notFound || res.msgs[0].Header.Get("Nats-Subject") != subj {
		return fmt.Errorf("%w: %d", ErrNoMessage, offset)
	}
	err = b.updateMarks(ctx, stream, subj, marks, modRemove, func(st *markState) error {
		if !slices.Contains(st.Removed, offset) {
			st.Removed = append(st.Removed, offset)
		}
		return nil
	}, func() uint64 { return offset })
	if err != nil {
		return err
	}
	st, err := b.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	if st.CachedInfo().Config.DenyDelete {
		return nil
	}
	if err := st.DeleteMsg(ctx, offset); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	return nil
}

// errWrongLastSeq is JetStream's answer to a publish whose expected last
// sequence per subject is not the subject's (JSStreamWrongLastSequenceErrF).
const errWrongLastSeq jetstream.ErrorCode = 10071

// updateMarks reads the channel's latest mark, lets change edit the state
// and stores it as the new mark, expecting the latest mark to be the one
// read: a concurrent moderator's mark in between makes it read again.
func (b *Broker) updateMarks(ctx context.Context, stream, subj, marks, kind string, change func(*markState) error, offset func() uint64) error {
	for attempt := 0; ; attempt++ {
		seq, st, err := b.readMarks(ctx, stream, marks)
		if err != nil {
			return err
		}
		if st.Clear {
			st.Clear, st.Cleared = false, seq
		}
		// Offsets below the channel's first stored message are gone for
		// good: no need to carry them.
		if len(st.Removed) > 0 {
			res, err := b.directGet(ctx, stream, directReq{Seq: 1, NextBySubj: subj})
			if err != nil {
				return err
			}
			first := uint64(math.MaxUint64)
			if !res.notFound {
				first = seqOf(res.msgs[0])
			}
			st.Removed = slices.DeleteFunc(st.Removed, func(o uint64) bool { return o < first })
		}
		if err := change(&st); err != nil {
			return err
		}
		body, _ := json.Marshal(st)
		m := &nats.Msg{Subject: marks, Data: body, Header: nats.Header{
			wire.HeaderMod:       []string{kind},
			wire.HeaderModOffset: []string{strconv.FormatUint(offset(), 10)},
		}}
		_, err = b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(stream), jetstream.WithExpectLastSequencePerSubject(seq),
			jetstream.WithMsgID(nats.NewInbox()[len(nats.InboxPrefix):]))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errWrongLastSeq && attempt < 20 {
			continue
		}
		return err
	}
}

// readMarks returns the channel's latest mark and its sequence (0 and the
// empty state when there is none).
func (b *Broker) readMarks(ctx context.Context, stream, marks string) (uint64, markState, error) {
	var st markState
	res, err := b.directGet(ctx, stream, directReq{LastBySubj: marks})
	if err != nil || res.notFound {
		return 0, st, err
	}
	m := res.msgs[0]
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return 0, st, fmt.Errorf("natsbroker: unreadable moderation mark on %s: %w", marks, err)
		}
	}
	return seqOf(m), st, nil
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultRoundTrip)
}

// markSet is what the marks say to a resume from a position.
type markSet struct {
	cleared bool                // cleared after the position
	last    uint64              // the latest mark's sequence (0: none)
	removed map[uint64]struct{} // offsets removed and maybe still stored
}

// marksAfter reads what the channel's latest mark says to a resume from n.
func (b *Broker) marksAfter(ctx context.Context, stream, marks string, n uint64) (markSet, error) {
	seq, st, err := b.readMarks(ctx, stream, marks)
	if err != nil || seq == 0 {
		return markSet{}, err
	}
	ms := markSet{last: seq}
	clearedAt := st.Cleared
	if st.Clear {
		clearedAt = seq
	}
	ms.cleared = clearedAt > n
	for _, o := range st.Removed {
		if o > n || o == n {
			if ms.removed == nil {
				ms.removed = map[uint64]struct{}{}
			}
			ms.removed[o] = struct{}{}
		}
	}
	return ms, nil
}

// lastMark is the sequence of the channel's latest mark (0: none).
func (b *Broker) lastMark(ctx context.Context, stream, marks string) (uint64, error) {
	res, err := b.directGet(ctx, stream, directReq{LastBySubj: marks})
	if err != nil || res.notFound {
		return 0, err
	}
	return seqOf(res.msgs[0]), nil
}

// watchMarks subscribes to the republished marks of every persistent
// namespace: one subscription per namespace and gateway, not per channel.
func (b *Broker) watchMarks() error {
	for _, n := range b.namespaces {
		base := b.livePrefix + "." + n.name + "." + markToken
		for _, subj := range []string{base, base + ".>"} {
			sub, err := b.nc.Subscribe(subj, b.onMark)
			if err != nil {
				return err
			}
			b.markSubs = append(b.markSubs, sub)
		}
	}
	return nil
}

// onMark resets the live feed of the marked channel, if this gateway has
// one: the hub drops the channel's ring and its clients rejoin, resuming
// through replay, which obeys the mark.
func (b *Broker) onMark(m *nats.Msg) {
	// fabric_live.<ns>.=3A[.rest] → fabric.<ns>[.rest]
	rest := m.Subject[len(b.livePrefix):]
	i := strings.Index(rest, "."+markToken)
	if i < 0 {
		return
	}
	subj := b.prefix + rest[:i] + rest[i+1+len(markToken):]
	seq := seqOf(m)
	for _, s := range b.liveSubs() {
		if s.subj == subj {
			go s.applyMark(seq) // off the NATS goroutine: a fill may hold s.mu
		}
	}
}
