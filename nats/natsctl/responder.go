package natsctl

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/control"
)

// Local is what a responder asks of its own gateway: the local view and
// the local half of each operation. gateway.Gateway implements it; every
// method reads or changes this process only and returns promptly.
type Local interface {
	// LocalPresence is topic's presence on this gateway: metas by
	// presence key (for a namespace without presence: by user).
	LocalPresence(topic string) map[string][]json.RawMessage
	// LocalChannels lists the local topics matching pattern (every
	// topic for "") with their local member counts.
	LocalChannels(pattern string) ([]control.ChannelInfo, error)
	// DisconnectUser closes every connection of user with code and
	// reason and says how many it closed.
	DisconnectUser(user string, code int, reason string) int
	// UnsubscribeUser ends each of user's channel instances on topic
	// (phx_close) and says how many.
	UnsubscribeUser(user, topic string) int
	// CloseRefused closes every connection whose token the gateway would
	// now refuse (revoked, or its user banned) and says how many.
	CloseRefused() int
	// LocalCounts is the number of open connections and active channels.
	LocalCounts() (connections, channels int)
}

// ResponderConfig configures a gateway's responder.
type ResponderConfig struct {
	Conn   *nats.Conn
	Prefix string // default "fabric": subjects <prefix>_ctl.…
	// ID names this gateway in answers and heartbeats; stable for the
	// process (gateway.Gateway.ID).
	ID      string
	Version string
	Local   Local
	// Revocations receives bans and revocations the moment they are
	// requested (its watch brings them too, a little later). Nil: revoke
	// and ban requests are answered with an error.
	Revocations *Revocations
	// Heartbeat is how often the gateway announces itself (default 1 s);
	// it counts as alive for three of them.
	Heartbeat time.Duration
	Logger    *slog.Logger
}

// Responder answers control requests for one gateway.
type Responder struct {
	cfg     ResponderConfig
	subj    subjects
	started time.Time
	log     *slog.Logger
	subs    []*nats.Subscription
	work    chan struct{} // bounds concurrent requests
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

// maxInFlight bounds the requests one gateway works on at once; more wait
// in the subscription's buffer (and, past the deadline, go unanswered:
// reported Missing).
const maxInFlight = 8

// StartResponder subscribes to the control subjects and starts the
// heartbeats.
func StartResponder(cfg ResponderConfig) (*Responder, error) {
	if cfg.Conn == nil || cfg.Local == nil || cfg.ID == "" {
		return nil, errors.New("natsctl: responder needs a connection, a gateway and an id")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "fabric"
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Responder{cfg: cfg, subj: newSubjects(cfg.Prefix), started: time.Now(), log: cfg.Logger,
		work: make(chan struct{}, maxInFlight), stop: make(chan struct{})}
	sub, err := cfg.Conn.Subscribe(r.subj.request+"*", r.handle)
	if err != nil {
		return nil, err
	}
	r.subs = append(r.subs, sub)
	sub, err = cfg.Conn.Subscribe(r.subj.hello, func(*nats.Msg) { r.beat() })
	if err != nil {
		r.unsubscribe()
		return nil, err
	}
	r.subs = append(r.subs, sub)
	r.beat()
	r.wg.Add(1)
	go r.heartbeats()
	return r, nil
}

func (r *Responder) heartbeats() {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.beat()
		}
	}
}

func (r *Responder) beat() {
	b, _ := json.Marshal(heartbeat{GW: r.cfg.ID, Version: r.cfg.Version, Started: r.started.UnixMilli(), EveryMS: r.cfg.Heartbeat.Milliseconds()})
	// A failed publish (NATS away) is the silence that marks us dead.
	_ = r.cfg.Conn.Publish(r.subj.heartbeat, b)
}

// Close stops answering and tells the callers this gateway is gone, so
// that it is not reported Missing for the next few seconds.
func (r *Responder) Close() {
	r.once.Do(func() {
		close(r.stop)
		r.unsubscribe()
		b, _ := json.Marshal(heartbeat{GW: r.cfg.ID})
		_ = r.cfg.Conn.Publish(r.subj.bye, b)
		r.wg.Wait()
	})
}

func (r *Responder) unsubscribe() {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
}

func (r *Responder) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	op := strings.TrimPrefix(m.Subject, r.subj.request)
	select {
	case r.work <- struct{}{}:
	case <-r.stop:
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() { <-r.work }()
		a := r.answer(op, m.Data)
		a.GW = r.cfg.ID
		b, _ := json.Marshal(a)
		_ = m.Respond(b)
	}()
}

func (r *Responder) answer(op string, data []byte) answer {
	var req request
	if err := json.Unmarshal(data, &req); err != nil {
		return answer{Error: "malformed request"}
	}
	l := r.cfg.Local
	switch op {
	case opPresence:
		return answer{Presence: l.LocalPresence(req.Topic)}
	case opPresenceStats:
		keys := map[string]int{}
		for k, metas := range l.LocalPresence(req.Topic) {
			keys[k] = len(metas)
		}
		return answer{Keys: keys}
	case opChannels:
		chs, err := l.LocalChannels(req.Pattern)
		if err != nil {
			return answer{Error: err.Error()}
		}
		out := make([]channelCount, len(chs))
		for i, c := range chs {
			out[i] = channelCount{Topic: c.Topic, Members: c.Members}
		}
		return answer{Channels: out}
	case opDisconnect:
		if req.BanUntil > 0 {
			if r.cfg.Revocations == nil {
				return answer{Error: "no revocation list on this gateway"}
			}
			// Before closing: the client's immediate reconnect must
			// already meet the ban.
			r.cfg.Revocations.apply(entry{Kind: kindBan, User: req.User, Until: req.BanUntil, Code: req.Code, Reason: req.Reason})
		}
		return answer{Count: l.DisconnectUser(req.User, req.Code, req.Reason)}
	case opUnsubscribe:
		return answer{Count: l.UnsubscribeUser(req.User, req.Topic)}
	case opRevoke:
		if r.cfg.Revocations == nil || req.Revocation == nil {
			return answer{Error: "no revocation list on this gateway"}
		}
		r.cfg.Revocations.apply(*req.Revocation)
		return answer{Count: l.CloseRefused()}
	case opInfo:
		conns, chans := l.LocalCounts()
		return answer{Info: &gatewayInfo{Version: r.cfg.Version, UptimeMS: time.Since(r.started).Milliseconds(),
			Connections: conns, Channels: chans, NATS: r.natsInfo()}}
	}
	return answer{Error: "unknown operation " + op}
}

func (r *Responder) natsInfo() natsInfo {
	nc := r.cfg.Conn
	n := natsInfo{ClusterName: nc.ConnectedClusterName()}
	if u := nc.ConnectedUrlRedacted(); u != "" {
		n.Servers = []string{u}
	}
	if js, err := jetstream.New(nc); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ai, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			n.JetStream, n.JetStreamDomain = true, ai.Domain
		}
	}
	return n
}
