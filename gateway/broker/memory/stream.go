package memory

import (
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Stream models one persistent namespace's JetStream stream as natsbroker
// uses it, with the ground truth a real stream does not keep: which
// messages were removed, and by what. It answers replays ideally (Replay),
// which makes it the oracle of the property tests of nats/natsbroker.
//
// Modelled: one sequence shared by the namespace's channels (moderation
// marks take sequences too, on a subject of their own), a stream-wide
// message limit and a per-channel limit (both discard old, front-first),
// purges (whole or one channel, with seq or keep), deletes, a moderator's
// clear and removal (marks; the bytes stay), and recreation (sequences
// start from 1 again in a new epoch).
type Stream struct {
	// Physical makes a moderator's clear and removal take the bytes too,
	// as natsbroker does where allow_purge and allow_delete let it.
	Physical bool

	mu          sync.Mutex
	incarnation int
	last        uint64            // last sequence used
	first       uint64            // first sequence stored (last+1 when empty)
	msgs        map[uint64]string // stored sequence → topic ("" + markPrefix for marks)
	order       []uint64          // stored sequences, ascending
	maxMsgs     int               // 0: none
	maxPer      int               // 0: none

	// Ground truth, for the current incarnation.
	ever      map[string][]uint64 // every message each channel ever stored
	lost      map[uint64]string   // removed sequence → cause
	moderated map[uint64]bool     // removed by a moderator (RemoveMessage)
	clears    map[string][]uint64 // channel → its clear marks' sequences
	hidden    map[uint64]bool     // cleared by a moderator (bytes kept)
	markGone  map[string]bool     // an operator deleted a channel's moderation mark
}

// Causes of a loss, as Lost reports them.
const (
	CauseLimit        = "limit"         // stream-wide limit or whole purge: front-first
	CauseChannelLimit = "channel_limit" // per-channel limit
	CausePurge        = "purge"         // an operator's purge of one channel
	CauseDelete       = "delete"        // an operator's delete
)

const markPrefix = "\x00mark:"

// NewStream returns an empty stream in its first incarnation.
func NewStream() *Stream {
	s := &Stream{}
	s.reset()
	return s
}

func (s *Stream) reset() {
	s.incarnation++
	s.last, s.first = 0, 1
	s.msgs, s.order = map[uint64]string{}, nil
	s.ever, s.lost, s.moderated = map[string][]uint64{}, map[uint64]string{}, map[uint64]bool{}
	s.clears, s.hidden = map[string][]uint64{}, map[uint64]bool{}
	s.markGone = map[string]bool{}
}

// Epoch names the current incarnation.
func (s *Stream) Epoch() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "model-" + strconv.Itoa(s.incarnation)
}

// Recreate deletes the stream and creates it again (new epoch).
func (s *Stream) Recreate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	maxMsgs, maxPer := s.maxMsgs, s.maxPer
	s.reset()
	s.maxMsgs, s.maxPer = maxMsgs, maxPer
}

// Last is the last sequence used.
func (s *Stream) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *Stream) remove(seq uint64, cause string) {
	topic, ok := s.msgs[seq]
	if !ok {
		return
	}
	delete(s.msgs, seq)
	i, _ := slices.BinarySearch(s.order, seq)
	s.order = slices.Delete(s.order, i, i+1)
	if len(s.order) > 0 {
		s.first = s.order[0]
	} else {
		s.first = s.last + 1
	}
	// Marks, and messages a moderator already took away, are no loss.
	if cause != "" && len(topic) > 0 && topic[0] != 0 && !s.moderated[seq] && !s.hidden[seq] {
		s.lost[seq] = cause
	}
}

func (s *Stream) store(subject string) uint64 {
	s.last++
	seq := s.last
	s.msgs[seq] = subject
	s.order = append(s.order, seq)
	if len(s.order) == 1 {
		s.first = seq
	}
	if s.maxPer > 0 {
		s.trimChannel(subject, s.maxPer)
	}
	for s.maxMsgs > 0 && len(s.order) > s.maxMsgs {
		s.remove(s.order[0], CauseLimit)
	}
	return seq
}

func (s *Stream) stored(subject string) []uint64 {
	var out []uint64
	for _, seq := range s.order {
		if s.msgs[seq] == subject {
			out = append(out, seq)
		}
	}
	return out
}

func (s *Stream) trimChannel(subject string, keep int) {
	own := s.stored(subject)
	for i := 0; i < len(own)-keep; i++ {
		s.remove(own[i], CauseChannelLimit)
	}
}

// Publish stores a message on topic and returns its offset.
func (s *Stream) Publish(topic string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.store(topic)
	s.ever[topic] = append(s.ever[topic], seq)
	return seq
}

// SetLimits sets the stream-wide and per-channel message limits (0: none);
// lowering one cuts at once, like a stream update.
func (s *Stream) SetLimits(maxMsgs, maxPerChannel int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxMsgs, s.maxPer = maxMsgs, maxPerChannel
	if maxPerChannel > 0 {
		for topic := range s.ever {
			s.trimChannel(topic, maxPerChannel)
		}
		for topic := range s.clears {
			s.trimChannel(markPrefix+topic, maxPerChannel)
		}
	}
	for maxMsgs > 0 && len(s.order) > maxMsgs {
		s.remove(s.order[0], CauseLimit)
	}
}

// Purge removes stored messages like JetStream's purge: of one channel
// (topic != "") or of the whole stream, those below seq (seq > 0), or all
// but the newest keep (keep > 0), or all.
func (s *Stream) Purge(topic string, seq, keep uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var set []uint64
	cause := CauseLimit
	if topic != "" {
		set = s.stored(topic)
		cause = CausePurge
	} else {
		set = slices.Clone(s.order)
	}
	switch {
	case seq > 0:
		for _, q := range set {
			if q < seq {
				s.remove(q, cause)
			}
		}
		if topic == "" && seq > s.last+1 {
			// A whole purge up to a sequence beyond the stream moves the
			// sequence on (JetStream's compact).
			s.last, s.first = seq-1, seq
		}
	case keep > 0:
		for i := 0; i < len(set)-int(keep); i++ {
			s.remove(set[i], cause)
		}
	default:
		for _, q := range set {
			s.remove(q, cause)
		}
		if topic == "" {
			s.first = s.last + 1
		}
	}
}

// Delete removes one message as an operator would (nats stream rmm).
func (s *Stream) Delete(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.msgs[seq]; len(t) > len(markPrefix) && t[:len(markPrefix)] == markPrefix {
		s.markGone[t[len(markPrefix):]] = true
	}
	s.remove(seq, CauseDelete)
}

// MarkDeleted reports whether an operator deleted one of topic's
// moderation marks in this incarnation: its moderation is then beyond
// what Fabric can uphold (the documented bound of allow_delete).
func (s *Stream) MarkDeleted(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.markGone[topic]
}

// Clear is a moderator's clear of topic: a mark is stored; the messages
// stay, never served. It returns the mark's sequence.
func (s *Stream) Clear(topic string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.stored(topic) {
		s.hidden[q] = true
	}
	seq := s.store(markPrefix + topic)
	if s.Physical {
		for _, q := range s.stored(topic) {
			if q < seq {
				s.remove(q, "")
			}
		}
	}
	s.clears[topic] = append(s.clears[topic], seq)
	return seq
}

// Remove is a moderator's removal of the message at seq on topic; it
// reports false when topic has no stored message there.
func (s *Stream) Remove(topic string, seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.msgs[seq] != topic {
		return false
	}
	s.moderated[seq] = true
	s.store(markPrefix + topic)
	if s.Physical {
		s.remove(seq, "")
	}
	return true
}

// Head is topic's position: its last stored message or moderation mark,
// whichever is later, or the stream's last sequence when it has neither
// (natsbroker's head).
func (s *Stream) Head(topic string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var h uint64
	for _, subj := range []string{topic, markPrefix + topic} {
		if own := s.stored(subj); len(own) > 0 {
			h = max(h, own[len(own)-1])
		}
	}
	if h == 0 {
		return s.last
	}
	return h
}

// Stored is what a resume of topic after offset must deliver: the
// channel's stored messages after it, less those a moderator removed.
func (s *Stream) Stored(topic string, after uint64) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for _, q := range s.stored(topic) {
		if q > after && !s.moderated[q] && !s.hidden[q] {
			out = append(out, q)
		}
	}
	return out
}

// Lost reports whether a message of topic after offset was removed by
// anything but a moderator, and the first such removal's cause.
func (s *Stream) Lost(topic string, after uint64) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.ever[topic] {
		if q > after {
			if cause, ok := s.lost[q]; ok {
				return true, cause
			}
		}
	}
	return false, ""
}

// Replay answers ideally, from the ground truth: recovered (every message
// of the channel after from is still stored, or removed by a moderator)
// with exactly the stored ones, or the reason. It implements the
// contract of broker.History.Replay in one page.
func (s *Stream) Replay(topic string, from broker.Position) broker.Page {
	if from.Epoch != s.Epoch() {
		return broker.Page{Reason: broker.ReasonEpochChanged}
	}
	s.mu.Lock()
	last := s.last
	var cleared bool
	for _, c := range s.clears[topic] {
		cleared = cleared || c > from.Offset
	}
	s.mu.Unlock()
	switch {
	case from.Offset > last:
		return broker.Page{Reason: broker.ReasonOffsetAhead}
	case cleared:
		return broker.Page{Reason: broker.ReasonHistoryCleared}
	}
	if lost, _ := s.Lost(topic, from.Offset); lost {
		return broker.Page{Reason: broker.ReasonHistoryGone}
	}
	p := broker.Page{Done: true}
	prev := from.Offset
	for _, q := range s.Stored(topic, from.Offset) {
		p.Messages = append(p.Messages, &broker.Message{Topic: topic, Offset: q, Prev: prev})
		prev = q
	}
	return p
}

// String describes the stream, for test failures.
func (s *Stream) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("incarnation %d, seq %d..%d, %d stored, limits %d/%d per channel", s.incarnation, s.first, s.last, len(s.order), s.maxMsgs, s.maxPer)
}
