package natsbroker

import (
	"context"
	"fmt"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// What the server API's History reads beyond Replay: a topic's current
// epoch and its latest N messages. Direct Get has no backward batch, so
// Latest finds where the last N start by a binary search over stream
// sequences, each probe one Direct Get whose Nats-Num-Pending says how many
// of the topic's messages follow (about log2(stream length) requests), and
// then reads forwards.

// HistoryEpoch returns the current epoch of topic's stream, and false when
// topic's namespace keeps no history.
func (b *Broker) HistoryEpoch(topic string) (string, bool) {
	n := b.namespaceOf(topic)
	if n == nil {
		return "", false
	}
	return n.getEpoch(), true
}

// maxLatest bounds Latest's n: a page, not a dump.
const maxLatest = 10000

// Latest returns the latest n stored messages of topic, oldest first,
// chained by Prev (the first one's Prev is the offset of the topic's
// message before it, 0 when there is none), and the epoch they belong to.
// Done is true when nothing followed the last one when it was read.
func (b *Broker) Latest(ctx context.Context, topic string, n int) (broker.Page, string, error) {
	ns := b.namespaceOf(topic)
	if ns == nil {
		return broker.Page{}, "", fmt.Errorf("natsbroker: topic %q has no history", topic)
	}
	if n <= 0 || n > maxLatest {
		return broker.Page{}, "", fmt.Errorf("natsbroker: Latest wants 1..%d messages, not %d", maxLatest, n)
	}
	if err := b.Available(topic); err != nil {
		return broker.Page{}, "", err
	}
	epoch := ns.getEpoch()
	subj, err := b.subject(topic)
	if err != nil {
		return broker.Page{}, "", err
	}
	first, err := b.directGet(ctx, ns.stream, directReq{Seq: 1, NextBySubj: subj, Batch: 1})
	if err != nil {
		return broker.Page{}, "", err
	}
	if first.notFound || len(first.msgs) == 0 {
		return broker.Page{Done: true}, epoch, nil
	}
	lo := seqOf(first.msgs[0])
	total := first.numPending + 1
	var prev uint64
	want := uint64(n)
	if total > want {
		// The largest s with count(s) ≥ n+1 is the sequence of the
		// message just before the last n: it becomes the first's Prev.
		last, err := b.directGet(ctx, ns.stream, directReq{LastBySubj: subj})
		if err != nil {
			return broker.Page{}, "", err
		}
		if last.notFound || len(last.msgs) == 0 {
			return broker.Page{Done: true}, epoch, nil
		}
		hi := seqOf(last.msgs[0])
		for lo < hi {
			mid := lo + (hi-lo+1)/2
			res, err := b.directGet(ctx, ns.stream, directReq{Seq: mid, NextBySubj: subj, Batch: 1})
			if err != nil {
				return broker.Page{}, "", err
			}
			if !res.notFound && len(res.msgs) > 0 && res.numPending+1 >= want+1 {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		// lo is now a sequence whose next message of the topic has exactly
		// n after it (or more, if some arrived meanwhile).
		res, err := b.directGet(ctx, ns.stream, directReq{Seq: lo, NextBySubj: subj, Batch: 1})
		if err != nil {
			return broker.Page{}, "", err
		}
		if res.notFound || len(res.msgs) == 0 {
			return broker.Page{Reason: broker.ReasonHistoryGone}, epoch, nil
		}
		prev = seqOf(res.msgs[0])
		lo = prev + 1
	}
	page := broker.Page{}
	for uint64(len(page.Messages)) < want {
		left := int(want) - len(page.Messages)
		res, err := b.directGet(ctx, ns.stream, directReq{Seq: lo, NextBySubj: subj, Batch: left, MaxBytes: replayPageBytes})
		if err != nil {
			return broker.Page{}, "", err
		}
		if res.notFound || len(res.msgs) == 0 {
			page.Done = true
			break
		}
		for _, m := range res.msgs {
			seq := seqOf(m)
			lo = seq + 1
			bm, ok := b.convert(topic, m)
			if !ok {
				prev = seq // undeliverable event name: skipped, the chain moves on
				continue
			}
			bm.Offset, bm.Prev = seq, prev
			prev = seq
			page.Messages = append(page.Messages, bm)
		}
		page.Done = res.numPending == 0
		if page.Done {
			break
		}
	}
	return page, epoch, nil
}
