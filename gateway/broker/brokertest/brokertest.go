// Package brokertest is the conformance suite of the broker port: Run
// checks the contract documented in package broker against one
// implementation, so the in-memory broker the gateway's unit tests rely on
// and the NATS adapter are held to the same behaviour.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// wait bounds every wait of the suite: generous, as the machine is shared.
const wait = 10 * time.Second

// Env is one fresh broker under test and the hooks the suite needs from
// outside the port. A nil hook or empty namespace leaves its part out (the
// subtest's name says so); an optional interface the Broker does not
// implement likewise.
type Env struct {
	Broker broker.Broker
	// Ephemeral is a namespace without history (e.g. "chat").
	Ephemeral string
	// Persistent is a namespace the broker was told keeps history (its
	// stream settings); Broker must then implement broker.History.
	Persistent string
	// Pushes is a namespace the suite sends routed pushes on
	// (broker.Handlers); no service listens in the suite.
	Pushes string
	// Presence is a namespace whose presence is carried (broker.Presence).
	Presence string
	// Purge removes every stored message of topic as an operator would:
	// resumes from before it must be told history_gone.
	Purge func(t *testing.T, topic string)
	// Recreate deletes the Persistent namespace's store and creates it
	// again (a new epoch): live subscribers must be reset.
	Recreate func(t *testing.T)
}

// moderator is control.Moderator's clear (kept local: the port's suite
// does not import the control plane).
type moderator interface {
	ClearChannel(ctx context.Context, topic string) error
}

// Run runs the suite; newEnv is called once per subtest.
func Run(t *testing.T, newEnv func(t *testing.T) Env) {
	t.Run("ValidateTopic", func(t *testing.T) { testValidate(t, newEnv(t)) })
	t.Run("Ephemeral", func(t *testing.T) { testEphemeral(t, newEnv(t)) })
	t.Run("Unsubscribe", func(t *testing.T) { testUnsubscribe(t, newEnv(t)) })
	e := newEnv(t)
	_, hasHistory := e.Broker.(broker.History)
	run(t, "History", e.Persistent != "" && hasHistory, func(t *testing.T) { testHistory(t, newEnv(t)) })
	run(t, "Replay", e.Persistent != "" && hasHistory, func(t *testing.T) { testReplay(t, newEnv(t)) })
	run(t, "HistoryGone", e.Persistent != "" && hasHistory && e.Purge != nil, func(t *testing.T) { testPurge(t, newEnv(t)) })
	_, hasMod := e.Broker.(moderator)
	run(t, "HistoryCleared", e.Persistent != "" && hasHistory && hasMod, func(t *testing.T) { testCleared(t, newEnv(t)) })
	run(t, "Recreate", e.Persistent != "" && hasHistory && e.Recreate != nil, func(t *testing.T) { testRecreate(t, newEnv(t)) })
	_, hasPresence := e.Broker.(broker.Presence)
	run(t, "Presence", e.Presence != "" && hasPresence, func(t *testing.T) { testPresence(t, newEnv(t)) })
	_, hasHandlers := e.Broker.(broker.Handlers)
	run(t, "Handlers", e.Pushes != "" && hasHandlers, func(t *testing.T) { testHandlers(t, newEnv(t)) })
}

// run names a part the implementation does not provide
// "<name>_not_implemented" and skips it.
func run(t *testing.T, name string, ok bool, f func(t *testing.T)) {
	if !ok {
		t.Run(name+"_not_implemented", func(t *testing.T) { t.Skip("the implementation does not provide " + name) })
		return
	}
	t.Run(name, f)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

func collect(t *testing.T, b broker.Broker, topic string) (broker.Subscription, <-chan *broker.Message) {
	t.Helper()
	ch := make(chan *broker.Message, 1000)
	sub, err := b.Subscribe(ctx(t), topic, func(m *broker.Message) { ch <- m })
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub, ch
}

func recv(t *testing.T, ch <-chan *broker.Message) *broker.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message delivered")
		return nil
	}
}

// recvReset skips live messages until a Reset.
func recvReset(t *testing.T, ch <-chan *broker.Message) *broker.Message {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if m := recv(t, ch); m.Reset {
			return m
		}
	}
	t.Fatal("no reset delivered")
	return nil
}

func publish(t *testing.T, b broker.Broker, topic, event, payload string) uint64 {
	t.Helper()
	off, err := b.Publish(ctx(t), topic, event, []byte(payload))
	if err != nil {
		t.Fatalf("Publish(%q): %v", topic, err)
	}
	return off
}

func testValidate(t *testing.T, e Env) {
	ns := e.Ephemeral
	if err := e.Broker.ValidateTopic(ns + ":lobby"); err != nil {
		t.Fatalf("valid topic: %v", err)
	}
	for _, topic := range []string{"", ns + "::x", ":x", ns + ":", ns + ":*", ns + ":>", "*:x", ns + ":" + strings.Repeat("a", 256), ns + ":a\x00b", ns + ":\xff"} {
		if err := e.Broker.ValidateTopic(topic); !errors.Is(err, broker.ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%q) = %v, want ErrInvalidTopic", topic, err)
		}
		if _, err := e.Broker.Subscribe(ctx(t), topic, func(*broker.Message) {}); err == nil {
			t.Errorf("Subscribe(%q) accepted", topic)
		}
		if _, err := e.Broker.Publish(ctx(t), topic, "m", []byte(`{}`)); err == nil {
			t.Errorf("Publish(%q) accepted", topic)
		}
	}
}

// testEphemeral: a publish after Subscribe returns is delivered, to every
// subscription, in order, with offset 0 and the event and payload as sent.
func testEphemeral(t *testing.T, e Env) {
	topic := e.Ephemeral + ":lobby"
	_, ch1 := collect(t, e.Broker, topic)
	_, ch2 := collect(t, e.Broker, topic)
	_, other := collect(t, e.Broker, e.Ephemeral+":other")
	const n = 50
	for i := 0; i < n; i++ {
		if off := publish(t, e.Broker, topic, "new_msg", fmt.Sprintf(`{"i":%d}`, i)); off != 0 {
			t.Fatalf("ephemeral publish returned offset %d", off)
		}
	}
	if off, err := e.Broker.Publish(ctx(t), topic, "bin", []byte{0, 0xff}); err != nil || off != 0 {
		t.Fatalf("binary publish: %d %v", off, err)
	}
	for _, ch := range []<-chan *broker.Message{ch1, ch2} {
		for i := 0; i < n; i++ {
			m := recv(t, ch)
			if m.Topic != topic || m.Event != "new_msg" || string(m.Payload) != fmt.Sprintf(`{"i":%d}`, i) || m.Binary || m.Offset != 0 || m.Prev != 0 || m.Reset {
				t.Fatalf("message %d: %+v", i, m)
			}
		}
		if m := recv(t, ch); !m.Binary || !bytes.Equal(m.Payload, []byte{0, 0xff}) || m.Event != "bin" {
			t.Fatalf("binary message: %+v", m)
		}
	}
	select {
	case m := <-other:
		t.Fatalf("another topic's subscription got %+v", m)
	default:
	}
}

// testUnsubscribe: no handler call starts after Unsubscribe returns.
func testUnsubscribe(t *testing.T, e Env) {
	topic := e.Ephemeral + ":lobby"
	var calls atomic.Int64
	sub, err := e.Broker.Subscribe(ctx(t), topic, func(*broker.Message) { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	_, ch := collect(t, e.Broker, topic)
	publish(t, e.Broker, topic, "m", `{"n":1}`)
	recv(t, ch)
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	if before > 1 {
		t.Fatalf("%d handler calls for one message", before)
	}
	publish(t, e.Broker, topic, "m", `{"n":2}`)
	// The live subscription's delivery of the same publish bounds how long
	// a late call to the removed one could take.
	recv(t, ch)
	publish(t, e.Broker, topic, "m", `{"n":3}`)
	recv(t, ch)
	if got := calls.Load(); got != before {
		t.Fatalf("handler called %d times after Unsubscribe", got-before)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatalf("second Unsubscribe: %v", err)
	}
}

func head(t *testing.T, sub broker.Subscription) broker.Position {
	t.Helper()
	hs, ok := sub.(broker.HeadSubscription)
	if !ok {
		t.Fatalf("subscription to a persistent topic is %T, not a broker.HeadSubscription", sub)
	}
	h := hs.Head()
	if h.Epoch == "" {
		t.Fatal("Head has no epoch")
	}
	return h
}

// testHistory: offsets increase per persistent topic, live messages are
// chained by Prev from the subscription's Head, and a later subscription's
// Head is the last message.
func testHistory(t *testing.T, e Env) {
	b := e.Broker
	topic, other := e.Persistent+":lobby", e.Persistent+":other"
	if off := publish(t, b, other, "m", `{}`); off == 0 {
		t.Fatalf("a publish on persistent %s got no offset: the broker was not told %s keeps history", other, e.Persistent)
	}
	sub, ch := collect(t, b, topic)
	h := head(t, sub)
	prev := h.Offset
	var last uint64
	for i := 0; i < 10; i++ {
		off := publish(t, b, topic, "m", fmt.Sprintf(`{"i":%d}`, i))
		o2 := publish(t, b, other, "m", `{}`)
		if off <= last || o2 <= off {
			t.Fatalf("offsets not increasing: %d after %d, other %d", off, last, o2)
		}
		m := recv(t, ch)
		if m.Reset || m.Offset != off || m.Prev != prev || string(m.Payload) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("live message %d: %+v, want offset %d prev %d", i, m, off, prev)
		}
		prev, last = off, off
	}
	sub2, _ := collect(t, b, topic)
	if h2 := head(t, sub2); h2.Epoch != h.Epoch || h2.Offset != last {
		t.Fatalf("later Head %+v, want {%s %d}", h2, h.Epoch, last)
	}
}

func replay(t *testing.T, h broker.History, topic string, from broker.Position, max int) broker.Page {
	t.Helper()
	p, err := h.Replay(ctx(t), topic, from, max)
	if err != nil {
		t.Fatalf("Replay(%q, %+v, %d): %v", topic, from, max, err)
	}
	if p.Reason != "" && len(p.Messages) > 0 {
		t.Fatalf("page with reason %q has %d messages", p.Reason, len(p.Messages))
	}
	return p
}

// testReplay: pages after a position hold exactly the topic's messages,
// chained by Prev from the position and on into live delivery.
func testReplay(t *testing.T, e Env) {
	b := e.Broker
	hist := b.(broker.History)
	topic, other := e.Persistent+":lobby", e.Persistent+":other"
	sub, ch := collect(t, b, topic)
	h := head(t, sub)
	var offs []uint64
	for i := 0; i < 12; i++ {
		offs = append(offs, publish(t, b, topic, "e", fmt.Sprintf(`{"i":%d}`, i)))
		publish(t, b, other, "m", `{}`)
	}
	for range offs {
		recv(t, ch)
	}
	// One page.
	p := replay(t, hist, topic, h, 100)
	if p.Reason != "" || !p.Done || len(p.Messages) != len(offs) {
		t.Fatalf("replay from head: reason %q done %v, %d messages", p.Reason, p.Done, len(p.Messages))
	}
	prev := h.Offset
	for i, m := range p.Messages {
		if m.Topic != topic || m.Offset != offs[i] || m.Prev != prev || m.Event != "e" || string(m.Payload) != fmt.Sprintf(`{"i":%d}`, i) || m.Reset {
			t.Fatalf("replayed %d: %+v, want offset %d prev %d", i, m, offs[i], prev)
		}
		prev = m.Offset
	}
	// Pages of 5 from the position, each continuing the chain.
	pos, prev, got := h, h.Offset, 0
	for i := 0; ; i++ {
		if i > len(offs) {
			t.Fatal("paging did not end")
		}
		p := replay(t, hist, topic, pos, 5)
		if p.Reason != "" || len(p.Messages) > 5 {
			t.Fatalf("page %d: reason %q, %d messages", i, p.Reason, len(p.Messages))
		}
		for _, m := range p.Messages {
			if m.Offset != offs[got] || m.Prev != prev {
				t.Fatalf("paged message %d: %+v", got, m)
			}
			prev = m.Offset
			got++
		}
		if len(p.Messages) > 0 {
			pos.Offset = prev
		}
		if p.Done {
			break
		}
		if len(p.Messages) == 0 {
			t.Fatalf("page %d empty and not done", i)
		}
	}
	if got != len(offs) {
		t.Fatalf("paging gave %d messages, want %d", got, len(offs))
	}
	// A position between the topic's messages (another topic's offset).
	if p := replay(t, hist, topic, broker.Position{Epoch: h.Epoch, Offset: offs[3] + 1}, 100); p.Reason != "" || len(p.Messages) != 8 || p.Messages[0].Prev != offs[3]+1 {
		t.Fatalf("replay from between: reason %q, %d messages", p.Reason, len(p.Messages))
	}
	// At the head: nothing, done.
	last := offs[len(offs)-1]
	if p := replay(t, hist, topic, broker.Position{Epoch: h.Epoch, Offset: last}, 10); p.Reason != "" || len(p.Messages) != 0 || !p.Done {
		t.Fatalf("replay at head: %+v", p)
	}
	// The live chain continues from the replayed one.
	off := publish(t, b, topic, "e", `{}`)
	if m := recv(t, ch); m.Offset != off || m.Prev != last {
		t.Fatalf("live after replay: %+v, want prev %d", m, last)
	}
	if p := replay(t, hist, topic, broker.Position{Epoch: h.Epoch + "x", Offset: offs[2]}, 10); p.Reason != broker.ReasonEpochChanged {
		t.Fatalf("other epoch: reason %q", p.Reason)
	}
	if p := replay(t, hist, topic, broker.Position{Epoch: h.Epoch, Offset: off + 1000}, 10); p.Reason != broker.ReasonOffsetAhead {
		t.Fatalf("future offset: reason %q", p.Reason)
	}
}

// testPurge: a resume across removed history is told history_gone, never
// given a silent gap; a resume after the removal is fine.
func testPurge(t *testing.T, e Env) {
	b := e.Broker
	hist := b.(broker.History)
	topic := e.Persistent + ":lobby"
	sub, _ := collect(t, b, topic)
	h := head(t, sub)
	for i := 0; i < 5; i++ {
		publish(t, b, topic, "m", `{}`)
	}
	e.Purge(t, topic)
	if p := replay(t, hist, topic, h, 10); p.Reason != broker.ReasonHistoryGone {
		t.Fatalf("resume across a purge: reason %q, %d messages", p.Reason, len(p.Messages))
	}
	off := publish(t, b, topic, "m", `{}`)
	if p := replay(t, hist, topic, broker.Position{Epoch: h.Epoch, Offset: off}, 10); p.Reason != "" || !p.Done || len(p.Messages) != 0 {
		t.Fatalf("resume after the purge: %+v", p)
	}
}

// testCleared: a moderator's clear resets live subscriptions and tells
// resumes from before it history_cleared.
func testCleared(t *testing.T, e Env) {
	b := e.Broker
	hist := b.(broker.History)
	topic := e.Persistent + ":lobby"
	sub, ch := collect(t, b, topic)
	h := head(t, sub)
	for i := 0; i < 3; i++ {
		publish(t, b, topic, "m", `{}`)
	}
	if err := b.(moderator).ClearChannel(ctx(t), topic); err != nil {
		t.Fatal(err)
	}
	r := recvReset(t, ch)
	if r.Epoch != h.Epoch || r.Offset <= h.Offset {
		t.Fatalf("reset %+v after head %+v", r, h)
	}
	if p := replay(t, hist, topic, h, 10); p.Reason != broker.ReasonHistoryCleared {
		t.Fatalf("resume across a clear: reason %q, %d messages", p.Reason, len(p.Messages))
	}
	if p := replay(t, hist, topic, broker.Position{Epoch: r.Epoch, Offset: r.Offset}, 10); p.Reason != "" || len(p.Messages) != 0 {
		t.Fatalf("resume from the reset: %+v", p)
	}
	off := publish(t, b, topic, "after", `{}`)
	if m := recv(t, ch); m.Reset || m.Offset != off || m.Event != "after" {
		t.Fatalf("live after the clear: %+v", m)
	}
}

// testRecreate: a recreated store is a new epoch; live subscribers are
// reset into it, and resumes from the old one are told epoch_changed.
func testRecreate(t *testing.T, e Env) {
	b := e.Broker
	hist := b.(broker.History)
	topic := e.Persistent + ":lobby"
	sub, ch := collect(t, b, topic)
	h := head(t, sub)
	for i := 0; i < 3; i++ {
		publish(t, b, topic, "m", `{}`)
	}
	e.Recreate(t)
	r := recvReset(t, ch)
	if r.Epoch == "" || r.Epoch == h.Epoch {
		t.Fatalf("reset %+v keeps the old epoch %q", r, h.Epoch)
	}
	if p := replay(t, hist, topic, h, 10); p.Reason != broker.ReasonEpochChanged {
		t.Fatalf("resume from the old epoch: reason %q", p.Reason)
	}
	off := publish(t, b, topic, "after", `{}`)
	m := recv(t, ch)
	if m.Reset || m.Offset != off || m.Event != "after" {
		t.Fatalf("live after recreation: %+v, want offset %d", m, off)
	}
	if p := replay(t, hist, topic, broker.Position{Epoch: r.Epoch, Offset: r.Offset}, 10); p.Reason != "" || len(p.Messages) != 1 || p.Messages[0].Offset != off {
		t.Fatalf("resume from the reset: %+v", p)
	}
}

// testPresence: every subscriber (this gateway's included) gets each
// presence message, and a request collects every subscriber's answer.
func testPresence(t *testing.T, e Env) {
	pr := e.Broker.(broker.Presence)
	topic := e.Presence + ":lobby"
	type got struct {
		msg   string
		reply func([]byte) error
	}
	chs := make([]chan got, 2)
	for i := range chs {
		ch := make(chan got, 100)
		chs[i] = ch
		id := i
		sub, err := pr.PresenceSubscribe(ctx(t), topic, func(msg []byte, reply func([]byte) error) {
			if reply != nil {
				_ = reply([]byte(fmt.Sprintf("answer %d to %s", id, msg)))
			}
			ch <- got{string(msg), reply}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	for i := 0; i < 5; i++ {
		if err := pr.PresencePublish(topic, []byte(fmt.Sprintf("diff %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range chs {
		for i := 0; i < 5; i++ {
			select {
			case g := <-ch:
				if g.msg != fmt.Sprintf("diff %d", i) || g.reply != nil {
					t.Fatalf("presence message %d: %q (reply %v)", i, g.msg, g.reply != nil)
				}
			case <-time.After(wait):
				t.Fatal("presence message not delivered")
			}
		}
	}
	answers := map[string]bool{}
	err := pr.PresenceRequest(ctx(t), topic, []byte("sync"), 2*time.Second, func(a []byte) bool {
		answers[string(a)] = true
		return len(answers) < 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if !answers["answer 0 to sync"] || !answers["answer 1 to sync"] {
		t.Fatalf("answers %v", answers)
	}
}

// testHandlers: a routed push with no service listening fails at once with
// ErrNoHandler, not a timeout.
func testHandlers(t *testing.T, e Env) {
	hd := e.Broker.(broker.Handlers)
	topic := e.Pushes + ":lobby"
	_, err := hd.Request(ctx(t), topic, "ping", []byte(`{}`), broker.PushMeta{ConnID: "c1"})
	if !errors.Is(err, broker.ErrNoHandler) {
		t.Fatalf("Request without a service: %v, want ErrNoHandler", err)
	}
}
