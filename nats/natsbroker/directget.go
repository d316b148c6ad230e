package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Replay reads history with JetStream Direct Get ($JS.API.DIRECT.GET.<stream>):
// a stateless request any current replica answers, with no consumer and no
// Raft proposal per client. nats.go has no batch form, so the request is
// written here (docs/history.md).

type directReq struct {
	Seq        uint64 `json:"seq,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
	Batch      int    `json:"batch,omitempty"`
	MaxBytes   int    `json:"max_bytes,omitempty"`
}

type directResult struct {
	msgs       []*nats.Msg
	numPending uint64 // matching messages after the last returned
	notFound   bool
}

// replayPageBytes bounds one page, so a long gap is paged rather than sent
// as one giant batch.
const replayPageBytes = 1 << 20

var errDirect = errors.New("natsbroker: direct get failed")

func (b *Broker) directGet(ctx context.Context, stream string, req directReq) (directResult, error) {
	var res directResult
	body, _ := json.Marshal(req)
	subj := b.jsAPI + ".DIRECT.GET." + stream
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRoundTrip)
		defer cancel()
	}
	if req.Batch == 0 {
		m, err := b.nc.RequestWithContext(ctx, subj, body)
		if err != nil {
			return res, err
		}
		switch st := m.Header.Get("Status"); st {
		case "":
			res.msgs = []*nats.Msg{m}
		case "404":
			res.notFound = true
		default:
			return res, fmt.Errorf("%w: status %s %s", errDirect, st, m.Header.Get("Description"))
		}
		return res, nil
	}
	// A batch answers with up to Batch messages and then an EOB status
	// message on our inbox; the channel holds them all, so nats.go never
	// has to drop one.
	inbox := b.nc.NewRespInbox()
	ch := make(chan *nats.Msg, req.Batch+2)
	sub, err := b.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return res, err
	}
	defer sub.Unsubscribe()
	if err := b.nc.PublishRequest(subj, inbox, body); err != nil {
		return res, err
	}
	for {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case m := <-ch:
			switch st := m.Header.Get("Status"); st {
			case "":
				res.msgs = append(res.msgs, m)
				res.numPending, _ = strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			case "204": // end of batch
				if p := m.Header.Get("Nats-Num-Pending"); p != "" {
					res.numPending, _ = strconv.ParseUint(p, 10, 64)
				}
				return res, nil
			case "404":
				res.notFound = len(res.msgs) == 0
				return res, nil
			default:
				return res, fmt.Errorf("%w: status %s %s", errDirect, st, m.Header.Get("Description"))
			}
		}
	}
}

func seqOf(m *nats.Msg) uint64 {
	n, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	return n
}

// Replay implements broker.History (see there for the contract).
func (b *Broker) Replay(ctx context.Context, topic string, from broker.Position, max int) (broker.Page, error) {
	n := b.namespaceOf(topic)
	if n == nil {
		return broker.Page{}, fmt.Errorf("natsbroker: topic %q has no history", topic)
	}
	if err := b.Available(topic); err != nil {
		return broker.Page{}, err
	}
	if from.Epoch != n.getEpoch() {
		return broker.Page{Reason: broker.ReasonEpochChanged}, nil
	}
	subj, err := b.subject(topic)
	if err != nil {
		return broker.Page{}, err
	}
	return b.page(ctx, n, topic, subj, from.Offset, max)
}

// page reads up to max messages on subj after offset n, checking that none
// was lost in between.
//
// The invariant (docs/history.md, "The guarantee"): a page without Reason
// holds every message of the channel stored after n, in order, except
// those a moderation mark removed; so a resume answered recovered:true
// misses nothing that is still stored, and nothing removed by retention
// or a purge was ever after n. It is proved from what can remove a
// channel's messages:
//
//   - Fabric's moderation stores a mark after what it covers: a clear
//     after n is history_cleared, a removal is skipped (marksAfter).
//   - Retention removes front-first: age, bytes and whole-stream purges
//     (with or without seq/keep) cut the stream's front; the per-channel
//     limit, and a subject purge with or without seq/keep, cut the
//     channel's front.
//   - Deletes and purges around Fabric are refused (DenyDelete,
//     DenyPurge) unless the namespace opted out; then an operator's
//     subject purge or delete that leaves later messages in place is not
//     seen (the documented bound).
//   - A recreated stream is another epoch (Replay checks it first).
//
// Hence: if n is a stored message of the channel (the anchor), nothing of
// the channel after it was cut, since every cut is front-first. Otherwise
// n is a position (a join on an empty channel, another channel's offset,
// or a removed message); then n must still be stored in the stream (else
// whatever removed it may have cut after it; a moderator's removal is
// known to have removed n alone), and the channel must be
// under its per-channel limit after n (else that limit may have cut after
// n: a cut leaves limit-many newer messages behind it).
func (b *Broker) page(ctx context.Context, ns *nsState, topic, subj string, n uint64, max int) (broker.Page, error) {
	if max <= 0 {
		max = 256
	}
	marks, err := b.marksAfter(ctx, ns.stream, b.markSubject(ns.name, subj), n)
	if err != nil {
		return broker.Page{}, err
	}
	if marks.cleared {
		return broker.Page{Reason: broker.ReasonHistoryCleared}, nil
	}
	start := n
	if start == 0 {
		start = 1
	}
	res, err := b.directGet(ctx, ns.stream, directReq{Seq: start, NextBySubj: subj, Batch: max + 1, MaxBytes: replayPageBytes})
	if err != nil {
		return broker.Page{}, err
	}
	msgs := res.msgs
	switch {
	case n > 0 && len(msgs) > 0 && seqOf(msgs[0]) == n:
		// The anchor (a message the client has) is still stored.
		msgs = msgs[1:]
	default:
		_, moderated := marks.removed[n]
		ok, reason, err := b.positionValid(ctx, ns, n, moderated)
		if err != nil {
			return broker.Page{}, err
		}
		if !ok {
			return broker.Page{Reason: reason}, nil
		}
		if lim := ns.perChannelLimit(); lim > 0 && uint64(len(msgs))+res.numPending >= uint64(lim) {
			return broker.Page{Reason: broker.ReasonHistoryGone}, nil
		}
	}
	page := broker.Page{Done: res.numPending == 0}
	if len(msgs) > max {
		msgs = msgs[:max]
		page.Done = false
	}
	prev := n
	for _, m := range msgs {
		seq := seqOf(m)
		if _, removed := marks.removed[seq]; removed {
			prev = seq // removed by a moderator: skipped, the chain moves on
			continue
		}
		bm, ok := b.convert(topic, m)
		if !ok {
			// Undeliverable event name: skipped, but the chain moves on.
			prev = seq
			continue
		}
		bm.Offset, bm.Prev = seq, prev
		prev = seq
		page.Messages = append(page.Messages, bm)
	}
	return page, nil
}

// positionValid decides whether offset n (not a stored message of the
// topic) is still a trustworthy position: it is not beyond the stream,
// and nothing removed it (a removed n says a cut may have reached past
// it), unless a moderator did (moderated: its mark says so, and removed
// nothing else), in which case only the stream's front must not have
// passed it. Position 0 is valid while the stream never dropped a message.
func (b *Broker) positionValid(ctx context.Context, ns *nsState, n uint64, moderated bool) (bool, string, error) {
	first, last, err := b.streamState(ctx, ns)
	if err != nil {
		return false, "", err
	}
	if n > last {
		return false, broker.ReasonOffsetAhead, nil
	}
	if n == 0 || moderated {
		if first > n+1 {
			return false, broker.ReasonHistoryGone, nil
		}
		return true, "", nil
	}
	res, err := b.directGet(ctx, ns.stream, directReq{Seq: n})
	if err != nil {
		return false, "", err
	}
	if res.notFound {
		return false, broker.ReasonHistoryGone, nil
	}
	return true, "", nil
}
