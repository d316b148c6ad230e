package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/internal/control"
)

// Moderation (control.Moderator): clearing a channel's history and
// removing one message.
//
// Each operation stores a mark in the namespace's stream, on the channel's
// mark subject <prefix>.<ns>.=3A.<rest> (Map never writes the token "=3A",
// an escaped ':', so no topic has that subject):
//
//   - every reader obeys marks: a resume across a clear is recovered:false
//     with history_cleared, a removed message is skipped by replay;
//   - RePublish sends the mark to every gateway at once (fabric_live.…),
//     which resets the channel there: its ring is dropped and its clients
//     rejoin, so nothing cleared or removed is served from memory;
//   - a mark is stored after what it covers, so retention (age, bytes,
//     per-subject limits, all front-first) never drops it before them.
//
// The bytes are removed too when the stream allows it (allow_purge,
// allow_delete): with the deny settings JetStream refuses every purge and
// delete, Fabric's included (see ownSettings), and the content stays on
// disk, never served, until retention drops it.

// Mark headers.
const (
	headerMod       = "Fabric-Mod"        // modClear or modRemove
	headerModOffset = "Fabric-Mod-Offset" // clear: the channel's last offset it covers; remove: the removed offset
	modClear        = "clear"
	modRemove       = "remove"
	markToken       = "=3A"
)

// ErrNoMessage is returned by RemoveMessage when the topic has no stored
// message at the offset.
var ErrNoMessage = errors.New("natsbroker: no message of this topic at that offset")

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
	stream = StreamName(ns)
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
	res, err := b.directGet(ctx, stream, directReq{LastBySubj: subj})
	if err != nil {
		return err
	}
	var last uint64
	if !res.notFound {
		last = seqOf(res.msgs[0])
	}
	if err := b.storeMark(ctx, stream, marks, modClear, last); err != nil {
		return err
	}
	if last == 0 {
		return nil
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
	if err := b.storeMark(ctx, stream, marks, modRemove, offset); err != nil {
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

func (b *Broker) storeMark(ctx context.Context, stream, marks, kind string, offset uint64) error {
	m := &nats.Msg{Subject: marks, Header: nats.Header{
		headerMod:       []string{kind},
		headerModOffset: []string{strconv.FormatUint(offset, 10)},
	}}
	_, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectStream(stream),
		jetstream.WithMsgID(nats.NewInbox()[len(nats.InboxPrefix):]))
	return err
}

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, defaultRoundTrip)
}

// markSet is what the marks after a position say.
type markSet struct {
	cleared bool                // a clear stored after the position
	last    uint64              // the latest mark's sequence (0: none)
	removed map[uint64]struct{} // offsets removed (their marks follow them)
}

// maxMarkPages bounds how many pages of marks one read goes through.
const maxMarkPages = 64

// marksAfter reads the channel's marks stored after position n. A mark
// that matters to a resume from n is always after n: a clear after n
// covers messages the client may have missed, and a removal's mark is
// stored after the message it removes.
func (b *Broker) marksAfter(ctx context.Context, stream, marks string, n uint64) (markSet, error) {
	var ms markSet
	from := n + 1
	for range maxMarkPages {
		res, err := b.directGet(ctx, stream, directReq{Seq: from, NextBySubj: marks, Batch: 256})
		if err != nil || res.notFound {
			return ms, err
		}
		for _, m := range res.msgs {
			seq := seqOf(m)
			ms.last = max(ms.last, seq)
			from = seq + 1
			switch m.Header.Get(headerMod) {
			case modClear:
				ms.cleared = true
			case modRemove:
				off, _ := strconv.ParseUint(m.Header.Get(headerModOffset), 10, 64)
				if ms.removed == nil {
					ms.removed = map[uint64]struct{}{}
				}
				ms.removed[off] = struct{}{}
			}
		}
		if res.numPending == 0 {
			return ms, nil
		}
	}
	return ms, fmt.Errorf("natsbroker: more than %d pages of moderation marks on %s", maxMarkPages, marks)
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
