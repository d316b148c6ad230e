package natsctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/control"
)

// ClusterConfig configures the caller's side.
type ClusterConfig struct {
	Conn   *nats.Conn
	Prefix string // default "fabric"
	// Revocations stores bans and revocations (Disconnect with a ban,
	// Revoke); without it those fail.
	Revocations *Revocations
	// Timeout bounds an operation whose context has no deadline
	// (default 2 s).
	Timeout time.Duration
	// RevokeTTL is how long a revocation is kept when the request gives
	// no Until: the longest lifetime of the tokens it revokes (default
	// 24 h).
	RevokeTTL time.Duration
	Logger    *slog.Logger
}

// Cluster implements control.Cluster over NATS.
type Cluster struct {
	cfg  ClusterConfig
	subj subjects
	log  *slog.Logger
	// warm is when the registry has heard every live gateway at least
	// once (one heartbeat interval after start, hello answered sooner):
	// before it an operation waits its whole deadline for gateways it
	// does not know yet.
	warm time.Time
	subs []*nats.Subscription

	mu    sync.Mutex
	peers map[string]peer
}

type peer struct {
	seen  time.Time
	every time.Duration
}

var _ control.Cluster = (*Cluster)(nil)

// defaultHeartbeat is what a peer is assumed to use before its first
// heartbeat says otherwise (ResponderConfig.Heartbeat's default).
const defaultHeartbeat = time.Second

// NewCluster starts following the gateways' heartbeats and asks every
// gateway for one now.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if cfg.Conn == nil {
		return nil, errors.New("natsctl: no NATS connection")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "fabric"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.RevokeTTL <= 0 {
		cfg.RevokeTTL = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, subj: newSubjects(cfg.Prefix), log: cfg.Logger, peers: map[string]peer{},
		warm: time.Now().Add(defaultHeartbeat + 250*time.Millisecond)}
	hb, err := cfg.Conn.Subscribe(c.subj.heartbeat, c.heard)
	if err != nil {
		return nil, err
	}
	bye, err := cfg.Conn.Subscribe(c.subj.bye, c.gone)
	if err != nil {
		_ = hb.Unsubscribe()
		return nil, err
	}
	c.subs = []*nats.Subscription{hb, bye}
	_ = cfg.Conn.Publish(c.subj.hello, nil)
	return c, nil
}

// Close stops following heartbeats.
func (c *Cluster) Close() {
	for _, s := range c.subs {
		_ = s.Unsubscribe()
	}
}

func (c *Cluster) heard(m *nats.Msg) {
	var h heartbeat
	if json.Unmarshal(m.Data, &h) != nil || h.GW == "" {
		return
	}
	every := time.Duration(h.EveryMS) * time.Millisecond
	if every <= 0 {
		every = defaultHeartbeat
	}
	c.mu.Lock()
	c.peers[h.GW] = peer{seen: time.Now(), every: every}
	c.mu.Unlock()
}

func (c *Cluster) gone(m *nats.Msg) {
	var h heartbeat
	if json.Unmarshal(m.Data, &h) != nil {
		return
	}
	c.mu.Lock()
	delete(c.peers, h.GW)
	c.mu.Unlock()
}

// alive lists the gateways heard from within three of their intervals.
func (c *Cluster) alive(now time.Time) map[string]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]bool, len(c.peers))
	for id, p := range c.peers {
		if now.Sub(p.seen) <= 3*p.every {
			out[id] = true
		} else if now.Sub(p.seen) > time.Minute {
			delete(c.peers, id) // long gone: stop reporting it
		}
	}
	return out
}

// gather sends req to every gateway and collects their answers until each
// gateway alive when it was sent answered (and the registry is warm) or
// the deadline. Answers carrying an error count as missing; when every
// answer carries one, that error is returned.
func (c *Cluster) gather(ctx context.Context, op string, req request) ([]answer, control.Coverage, error) {
	var cov control.Coverage
	body, err := json.Marshal(req)
	if err != nil {
		return nil, cov, err
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.cfg.Timeout)
	}
	inbox := c.cfg.Conn.NewRespInbox()
	sub, err := c.cfg.Conn.SubscribeSync(inbox)
	if err != nil {
		return nil, cov, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	expected := c.alive(time.Now())
	if err := c.cfg.Conn.PublishRequest(c.subj.request+op, inbox, body); err != nil {
		return nil, cov, fmt.Errorf("natsctl: %s: %w", op, err)
	}
	got := map[string]answer{}
	var failed []string
	var lastErr error // of a gateway that answered with an error
	done := func() bool {
		if time.Now().Before(c.warm) {
			return false
		}
		for id := range expected {
			if _, ok := got[id]; !ok && !slices.Contains(failed, id) {
				return false
			}
		}
		return true
	}
	for !done() {
		wait := time.Until(deadline)
		if wait <= 0 || ctx.Err() != nil {
			break
		}
		if w := time.Until(c.warm); w > 0 && w < wait && len(got)+len(failed) >= len(expected) {
			wait = w
		}
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
				continue // re-checked above: the deadline, or warm
			}
			return nil, cov, fmt.Errorf("natsctl: %s: %w", op, err)
		}
		var a answer
		if json.Unmarshal(m.Data, &a) != nil || a.GW == "" {
			continue
		}
		if a.Error != "" {
			if !slices.Contains(failed, a.GW) {
				failed = append(failed, a.GW)
				c.log.Warn("gateway could not answer a control request", "gateway", a.GW, "op", op, "err", a.Error)
			}
			lastErr = errors.New(a.Error)
			continue
		}
		got[a.GW] = a
	}
	answers := make([]answer, 0, len(got))
	for id, a := range got {
		cov.Answered = append(cov.Answered, id)
		answers = append(answers, a)
	}
	for id := range expected {
		if _, ok := got[id]; !ok {
			cov.Missing = append(cov.Missing, id)
		}
	}
	for _, id := range failed {
		if !expected[id] {
			cov.Missing = append(cov.Missing, id)
		}
	}
	sort.Strings(cov.Answered)
	sort.Strings(cov.Missing)
	sort.Slice(answers, func(i, j int) bool { return answers[i].GW < answers[j].GW })
	if len(got) == 0 && len(failed) > 0 {
		return nil, cov, fmt.Errorf("natsctl: %s: %w", op, lastErr)
	}
	return answers, cov, nil
}

// Presence implements control.Cluster.
func (c *Cluster) Presence(ctx context.Context, topic string) (control.PresenceResult, error) {
	res := control.PresenceResult{Topic: topic}
	if topic == "" {
		return res, errors.New("natsctl: presence needs a topic")
	}
	answers, cov, err := c.gather(ctx, opPresence, request{Topic: topic})
	res.Coverage = cov
	if err != nil {
		return res, err
	}
	byKey := map[string][]json.RawMessage{}
	for _, a := range answers {
		for k, metas := range a.Presence {
			byKey[k] = append(byKey[k], metas...)
		}
	}
	for k, metas := range byKey {
		res.Entries = append(res.Entries, control.PresenceEntry{Key: k, Metas: metas})
	}
	sort.Slice(res.Entries, func(i, j int) bool { return res.Entries[i].Key < res.Entries[j].Key })
	return res, nil
}

// PresenceStats implements control.Cluster.
func (c *Cluster) PresenceStats(ctx context.Context, topic string) (control.PresenceStatsResult, error) {
	res := control.PresenceStatsResult{Topic: topic}
	if topic == "" {
		return res, errors.New("natsctl: presence stats need a topic")
	}
	answers, cov, err := c.gather(ctx, opPresenceStats, request{Topic: topic})
	res.Coverage = cov
	if err != nil {
		return res, err
	}
	keys := map[string]bool{}
	for _, a := range answers {
		for k, n := range a.Keys {
			keys[k] = true
			res.Connections += n
		}
	}
	res.Members = len(keys)
	return res, nil
}

// Channels implements control.Cluster. The pattern is a grant pattern
// ("room:*", "game:>"); "" lists every active topic.
func (c *Cluster) Channels(ctx context.Context, pattern string) (control.ChannelsResult, error) {
	var res control.ChannelsResult
	if pattern != "" {
		if _, err := auth.ParsePattern(pattern); err != nil {
			return res, fmt.Errorf("natsctl: channels pattern: %w", err)
		}
	}
	answers, cov, err := c.gather(ctx, opChannels, request{Pattern: pattern})
	res.Coverage = cov
	if err != nil {
		return res, err
	}
	sum := map[string]int{}
	for _, a := range answers {
		for _, ch := range a.Channels {
			sum[ch.Topic] += ch.Members
		}
	}
	for t, n := range sum {
		res.Channels = append(res.Channels, control.ChannelInfo{Topic: t, Members: n})
	}
	sort.Slice(res.Channels, func(i, j int) bool { return res.Channels[i].Topic < res.Channels[j].Topic })
	return res, nil
}

// Close codes Disconnect uses when the request gives none (see
// docs/cluster-control.md).
const (
	CloseDisconnected = 4010
	CloseBanned       = 4011
)

// Disconnect implements control.Cluster. With a ban, every gateway
// applies the ban and closes the user's connections, then the ban is
// stored (so that it holds on gateways that restart or start later).
func (c *Cluster) Disconnect(ctx context.Context, r control.DisconnectRequest) (control.Affected, error) {
	var res control.Affected
	if r.User == "" {
		return res, errors.New("natsctl: disconnect needs a user")
	}
	code, reason := r.Code, r.Reason
	if code == 0 {
		code, reason = CloseDisconnected, cmpOr(reason, "disconnected")
		if r.Ban > 0 {
			code, reason = CloseBanned, cmpOr(r.Reason, "banned")
		}
	}
	if !sendableCode(code) {
		return res, fmt.Errorf("natsctl: close code %d cannot be sent (use 1000, 1001, 1008, 1011 or 3000-4999)", code)
	}
	if len(reason) > 123 || !utf8.ValidString(reason) {
		return res, errors.New("natsctl: a close reason is at most 123 bytes of UTF-8")
	}
	req := request{User: r.User, Code: code, Reason: reason}
	if r.Ban <= 0 {
		return c.count(ctx, opDisconnect, req)
	}
	if c.cfg.Revocations == nil {
		return res, errors.New("natsctl: no revocation list to keep the ban in")
	}
	req.BanUntil = time.Now().Add(r.Ban).UnixMilli()
	res, err := c.count(ctx, opDisconnect, req)
	if err != nil {
		return res, err
	}
	return res, c.store(ctx, entry{Kind: kindBan, User: r.User, Until: req.BanUntil, Code: code, Reason: reason})
}

// store keeps e in the bucket once the gateways that answered applied it
// (and counted what it closed): stored first, each gateway's watch would
// race the request to close the same connections. A gateway that missed
// the request applies e from the bucket, as does every gateway started
// later.
func (c *Cluster) store(ctx context.Context, e entry) error {
	if err := c.cfg.Revocations.add(ctx, e); err != nil {
		return fmt.Errorf("%w (applied on the gateways that answered, until they restart: call again)", err)
	}
	return nil
}

// Unsubscribe implements control.Cluster.
func (c *Cluster) Unsubscribe(ctx context.Context, r control.UnsubscribeRequest) (control.Affected, error) {
	if r.User == "" || r.Topic == "" {
		return control.Affected{}, errors.New("natsctl: unsubscribe needs a user and a topic")
	}
	return c.count(ctx, opUnsubscribe, request{User: r.User, Topic: r.Topic})
}

// Revoke implements control.Cluster: one token by JTI, or every token of
// User issued before IssuedBefore (and every token of User without iat).
// Every gateway applies it and closes the connections holding a revoked
// token, then the entry is stored (so it holds across restarts and on
// gateways that start later, until Until).
func (c *Cluster) Revoke(ctx context.Context, r control.RevokeRequest) (control.Affected, error) {
	var res control.Affected
	if c.cfg.Revocations == nil {
		return res, errors.New("natsctl: no revocation list")
	}
	until := r.Until
	if until.IsZero() {
		until = time.Now().Add(c.cfg.RevokeTTL)
	}
	var e entry
	switch {
	case r.JTI != "" && r.User == "" && r.IssuedBefore.IsZero():
		e = entry{Kind: kindJTI, JTI: r.JTI, Until: until.UnixMilli()}
	case r.JTI == "" && r.User != "" && !r.IssuedBefore.IsZero():
		e = entry{Kind: kindUser, User: r.User, Before: r.IssuedBefore.UnixMilli(), Until: until.UnixMilli()}
	default:
		return res, errors.New("natsctl: revoke either a jti, or a user's tokens issued before a time")
	}
	if !until.After(time.Now()) {
		return res, errors.New("natsctl: revocation ends in the past")
	}
	if err := e.valid(); err != nil {
		return res, err
	}
	res, err := c.count(ctx, opRevoke, request{Revocation: &e})
	if err != nil {
		return res, err
	}
	return res, c.store(ctx, e)
}

func (c *Cluster) count(ctx context.Context, op string, req request) (control.Affected, error) {
	answers, cov, err := c.gather(ctx, op, req)
	res := control.Affected{Coverage: cov}
	for _, a := range answers {
		res.Count += a.Count
	}
	return res, err
}

// Info implements control.Cluster.
func (c *Cluster) Info(ctx context.Context) (control.InfoResult, error) {
	answers, cov, err := c.gather(ctx, opInfo, request{})
	res := control.InfoResult{Coverage: cov}
	if err != nil {
		return res, err
	}
	for _, a := range answers {
		if a.Info == nil {
			continue
		}
		res.Gateways = append(res.Gateways, control.GatewayInfo{ID: a.GW, Version: a.Info.Version,
			Uptime: time.Duration(a.Info.UptimeMS) * time.Millisecond, Connections: a.Info.Connections, Channels: a.Info.Channels})
		if res.NATS.ClusterName == "" && len(res.NATS.Servers) == 0 {
			res.NATS = a.Info.NATS.control()
		}
	}
	return res, nil
}

// sendableCode: the close codes a server may send (RFC 6455 §7.4).
func sendableCode(c int) bool {
	switch {
	case c == 1000 || c == 1001 || c == 1008 || c == 1011:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
