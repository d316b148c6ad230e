package natsbroker

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/wire"
)

// Presence traffic between gateways is core NATS on one subject per channel:
// <prefix>_presence.<ns>.<segments> ("fabric_presence.room.lobby"). Diffs,
// heartbeats and goodbyes are plain publishes; a state request is a publish
// with a reply inbox on the same subject. Message bodies belong to
// gateway/presence.
//
// A gateway receives it on one wildcard subscription per namespace
// (<prefix>_presence.<ns>.>), the presence bus, and hands each message to
// the channel's handlers by subject; a subject nobody here serves is
// dropped. With one subscription per channel, each channel cost a
// subscription in nats.go and in nats-server (about 1.3 KB) and, with
// nats.go's callback subscriptions, a goroutine (3.5 KB); on the bus it
// costs a map entry. The price is that every gateway receives the whole
// namespace's presence traffic, also for channels it does not serve: one
// heartbeat per channel and gateway every TTL/3, and the diffs of joins
// and leaves (one per channel per flush, not per member). That is the
// design Phoenix's own Tracker has (every node replicates every topic's
// presence); for a cluster of a few gateways it is small next to the
// channels' messages, which stay on one subscription per channel.
//
// Knowing who else is there: every presence message carries its sender
// (wire.HeaderPresenceFrom), and a gateway that starts its bus asks the
// others once (<prefix>_presence_hello.<ns>, answered by every bus; "no
// responders" means nobody). A gateway that has heard no other gateway of
// the namespace within twice the presence TTL skips the state request a
// new channel makes (it would wait the sync window for answers that cannot
// come): any gateway with members of a channel heartbeats every TTL/3, and
// one that gets its first member after our bus started sends its diff to
// us, which the tracker answers with a state request to that gateway, as
// it does for any gateway new to it. So the skip loses nothing the
// request would have found: a peer's traffic sent before our bus
// subscribed is answered by the hello; traffic sent after it reaches us.

var _ broker.Presence = (*Broker)(nil)

func (b *Broker) presenceSubject(topic string) (string, error) {
	subj, err := b.subject(topic)
	if err != nil {
		return "", err
	}
	return b.prefix + "_presence" + subj[len(b.prefix):], nil
}

// defaultPresenceTTL is the namespace policy's presence_ttl default
// (gateway/namespace), for a namespace Config.PresenceTTL does not list.
const defaultPresenceTTL = 15 * time.Second

// presenceBus is one namespace's presence traffic (see above).
type presenceBus struct {
	ns string

	start sync.Mutex // held while subscribing; sub set once it worked
	sub   *nats.Subscription
	hello *nats.Subscription
	up    atomic.Bool // sub and hello are set

	mu   sync.RWMutex
	subs map[string][]*presenceSub // by subject

	// lastPeer is when another gateway was last heard (Unix ns); horizon
	// how long that keeps it known.
	lastPeer atomic.Int64
	horizon  time.Duration
}

// presenceSub is one channel's handler on the bus. It gives
// broker.Subscription's guarantee (no handler call starts after
// Unsubscribe returns) with mu and closed, like guarded.
type presenceSub struct {
	bus    *presenceBus
	subj   string
	h      func([]byte, func([]byte) error)
	mu     sync.Mutex
	closed bool
}

func (b *Broker) presenceBusOf(topic string) *presenceBus {
	ns, _, _ := strings.Cut(topic, ":")
	b.presMu.Lock()
	defer b.presMu.Unlock()
	if p := b.presBus[ns]; p != nil {
		return p
	}
	ttl := b.presTTL[ns]
	if ttl <= 0 {
		ttl = defaultPresenceTTL
	}
	p := &presenceBus{ns: ns, subs: map[string][]*presenceSub{}, horizon: 2*ttl + time.Second}
	b.presBus[ns] = p
	return p
}

// ensure subscribes the bus once (retried by the next caller after a
// failure) and returns once the server registered it.
func (b *Broker) ensureBus(ctx context.Context, p *presenceBus) error {
	p.start.Lock()
	defer p.start.Unlock()
	if p.sub != nil {
		return nil
	}
	sub, err := b.nc.Subscribe(b.prefix+"_presence."+p.ns+".>", func(m *nats.Msg) { b.onPresence(p, m) })
	if err != nil {
		return err
	}
	if err := sub.SetPendingLimits(b.pendingMsgs, b.pendingBytes); err != nil {
		_ = sub.Unsubscribe() // err is the one to report
		return err
	}
	if err := b.roundTrip(ctx); err != nil {
		_ = sub.Unsubscribe() // err is the one to report
		return err
	}
	// Ask who is there before answering such questions ourselves, or we
	// would answer our own.
	helloSubj := b.prefix + "_presence_hello." + p.ns
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = b.nc.RequestMsgWithContext(rctx, &nats.Msg{Subject: helloSubj, Header: b.presHdr})
	cancel()
	if !errors.Is(err, nats.ErrNoResponders) {
		// An answer, or no clear "nobody": assume someone.
		p.lastPeer.Store(time.Now().UnixNano())
	}
	hello, err := b.nc.Subscribe(helloSubj, func(m *nats.Msg) {
		b.heard(p, m)
		if m.Reply != "" {
			_ = b.nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: b.presHdr})
		}
	})
	if err != nil {
		_ = sub.Unsubscribe() // err is the one to report
		return err
	}
	if err := b.roundTrip(ctx); err != nil {
		_ = sub.Unsubscribe()   // err is the one to report
		_ = hello.Unsubscribe() // likewise
		return err
	}
	p.sub, p.hello = sub, hello
	p.up.Store(true)
	return nil
}

// heard notes a message from another gateway (one without the header is
// from a gateway that predates it: another one too).
func (b *Broker) heard(p *presenceBus, m *nats.Msg) {
	if v := m.Header[wire.HeaderPresenceFrom]; len(v) == 0 || v[0] != b.presID {
		p.lastPeer.Store(time.Now().UnixNano())
	}
}

// running reports whether the bus is subscribed (before that, nothing
// was heard: peers means nothing yet). It does not wait for a start under
// way (that request then goes out as if others were there).
func (p *presenceBus) running() bool { return p.up.Load() }

// peers reports whether another gateway of the namespace may have members.
func (p *presenceBus) peers() bool {
	return time.Since(time.Unix(0, p.lastPeer.Load())) < p.horizon
}

func (b *Broker) onPresence(p *presenceBus, m *nats.Msg) {
	b.heard(p, m)
	p.mu.RLock()
	subs := p.subs[m.Subject]
	p.mu.RUnlock()
	if len(subs) == 0 {
		return // a channel nobody here serves
	}
	var reply func([]byte) error
	if m.Reply != "" {
		inbox := m.Reply
		reply = func(d []byte) error { return b.nc.PublishMsg(&nats.Msg{Subject: inbox, Data: d, Header: b.presHdr}) }
	}
	for _, s := range subs {
		s.deliver(m.Data, reply)
	}
}

// local delivers a request to this gateway's subscribers of subj only and
// passes their answers to h (after the handlers returned: a handler may
// hold locks h needs).
func (p *presenceBus) local(subj string, req []byte, h func([]byte) bool) {
	p.mu.RLock()
	subs := p.subs[subj]
	p.mu.RUnlock()
	var (
		mu      sync.Mutex
		answers [][]byte
		late    bool // an answer after the request ended is dropped, as one after the window is
	)
	reply := func(d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if !late {
			answers = append(answers, append([]byte(nil), d...))
		}
		return nil
	}
	for _, s := range subs {
		s.deliver(req, reply)
	}
	mu.Lock()
	late = true
	mu.Unlock()
	for _, a := range answers {
		if !h(a) {
			return
		}
	}
}

func (s *presenceSub) deliver(data []byte, reply func([]byte) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.h(data, reply)
}

// PresenceSubscribe implements broker.Presence.
func (b *Broker) PresenceSubscribe(ctx context.Context, topic string, h func([]byte, func([]byte) error)) (broker.Subscription, error) {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return nil, err
	}
	p := b.presenceBusOf(topic)
	if err := b.ensureBus(ctx, p); err != nil {
		return nil, err
	}
	s := &presenceSub{bus: p, subj: subj, h: h}
	p.mu.Lock()
	// Copy on write: onPresence iterates a slice it read under RLock.
	p.subs[subj] = append(p.subs[subj][:len(p.subs[subj]):len(p.subs[subj])], s)
	p.mu.Unlock()
	return s, nil
}

// Unsubscribe implements broker.Subscription.
func (s *presenceSub) Unsubscribe() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	p := s.bus
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.subs[s.subj]
	var rest []*presenceSub
	for _, o := range old {
		if o != s {
			rest = append(rest, o)
		}
	}
	if len(rest) == 0 {
		delete(p.subs, s.subj)
	} else {
		p.subs[s.subj] = rest
	}
	return nil
}

// PresencePublish implements broker.Presence.
func (b *Broker) PresencePublish(topic string, msg []byte) error {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return err
	}
	return b.nc.PublishMsg(&nats.Msg{Subject: subj, Data: msg, Header: b.presHdr})
}

// presenceAway is called after the link to NATS came back: whatever other
// gateways said meanwhile was lost, so every bus assumes them present
// (state requests go out) until the horizon passes without a word.
func (b *Broker) presenceAway() {
	b.presMu.Lock()
	defer b.presMu.Unlock()
	now := time.Now().UnixNano()
	for _, p := range b.presBus {
		p.lastPeer.Store(now)
	}
}

// closePresence drops the presence buses' subscriptions.
func (b *Broker) closePresence() {
	b.presMu.Lock()
	defer b.presMu.Unlock()
	for _, p := range b.presBus {
		p.start.Lock()
		if p.sub != nil {
			_ = p.sub.Unsubscribe()   // the connection may be closed already
			_ = p.hello.Unsubscribe() // likewise
		}
		p.start.Unlock()
	}
}
