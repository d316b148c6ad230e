package natsbroker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// presenceInbox collects the answers to presence state requests on one
// wildcard subscription per broker (<inbox>.<id>), made at the first
// request. A private inbox per request cost a SUB and an UNSUB in
// nats-server and a subscription with an 8 KiB channel here for every
// channel a gateway starts serving — about 10 KB allocated per join of a
// fresh channel (one channel per user: every join), mostly for a request
// nobody else answers.
type presenceInbox struct {
	mu     sync.Mutex
	sub    *nats.Subscription // nil until the first request (or after a failed start)
	prefix string             // "<inbox>."
	next   uint64
	reqs   map[string]*presenceReq
}

// presenceReq is one request's answers, queued for its goroutine.
type presenceReq struct {
	mu   sync.Mutex
	q    [][]byte
	wake chan struct{} // capacity 1: answers are queued
}

// maxPresenceAnswers bounds the answers queued for one request (one per
// gateway serving the channel), like the buffered channel it replaces.
const maxPresenceAnswers = 1024

// start subscribes the inbox once and returns its subject prefix.
func (p *presenceInbox) start(nc *nats.Conn) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub != nil {
		return p.prefix, nil
	}
	inbox := nc.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", p.onAnswer)
	if err != nil {
		return "", err
	}
	// Known to the server before the first request goes out, so no
	// answer can arrive before the interest.
	if err := nc.FlushTimeout(defaultRoundTrip); err != nil {
		_ = sub.Unsubscribe() // err is the one to report
		return "", err
	}
	p.sub, p.prefix = sub, inbox+"."
	if p.reqs == nil {
		p.reqs = map[string]*presenceReq{}
	}
	return p.prefix, nil
}

func (p *presenceInbox) onAnswer(m *nats.Msg) {
	p.mu.Lock()
	r := p.reqs[strings.TrimPrefix(m.Subject, p.prefix)]
	p.mu.Unlock()
	if r == nil {
		return // the request's window closed
	}
	r.mu.Lock()
	if len(r.q) < maxPresenceAnswers {
		r.q = append(r.q, m.Data)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (p *presenceInbox) register() (string, *presenceReq) {
	r := &presenceReq{wake: make(chan struct{}, 1)}
	p.mu.Lock()
	p.next++
	id := strconv.FormatUint(p.next, 36)
	p.reqs[id] = r
	p.mu.Unlock()
	return id, r
}

func (p *presenceInbox) unregister(id string) {
	p.mu.Lock()
	delete(p.reqs, id)
	p.mu.Unlock()
}

func (p *presenceInbox) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sub != nil {
		_ = p.sub.Unsubscribe() // the connection may be closed already
	}
}

// PresenceRequest implements broker.Presence: a scatter-gather request
// answered by every gateway serving the channel; answers are collected on
// the broker's presence inbox for window. It returns at once when no other
// gateway was heard on the namespace's presence bus (presence.go).
func (b *Broker) PresenceRequest(ctx context.Context, topic string, req []byte, window time.Duration, h func([]byte) bool) error {
	subj, err := b.presenceSubject(topic)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if p := b.presenceBusOf(topic); p.running() && !p.peers() {
		// Nobody else can answer (presence.go): this gateway's own
		// subscribers answer without a round trip or a window to wait.
		p.local(subj, req, h)
		return nil
	}
	prefix, err := b.presInbox.start(b.nc)
	if err != nil {
		return err
	}
	id, r := b.presInbox.register()
	defer b.presInbox.unregister(id)
	if err := b.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: prefix + id, Data: req, Header: b.presHdr}); err != nil {
		return err
	}
	timer := time.NewTimer(window)
	defer timer.Stop()
	for {
		select {
		case <-r.wake:
			r.mu.Lock()
			q := r.q
			r.q = nil
			r.mu.Unlock()
			for _, d := range q {
				if !h(d) {
					return nil
				}
			}
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
