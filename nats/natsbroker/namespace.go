package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/nats/wire"
)

// Stream is what the broker needs to run one persistent namespace's
// JetStream stream FABRIC_<ns>: the retention and deny settings of the
// namespace's config (gateway/namespace.Namespace, whose history: true
// made it persistent). Nothing else of the namespace policy reaches the
// adapter.
type Stream struct {
	// MaxAge drops messages older than this (0: no age limit).
	MaxAge time.Duration
	// MaxBytes bounds the whole stream (0: DefaultStreamMaxBytes; -1: no
	// byte limit).
	MaxBytes int64
	// MaxMsgsPerChannel bounds each channel's history (0: no limit).
	MaxMsgsPerChannel int64
	// Replicas is the replication factor (0: 1).
	Replicas int
	// AllowPurge and AllowDelete let purges and deletes made around
	// Fabric through (by default the stream denies them; docs/history.md).
	AllowPurge, AllowDelete bool
	// Live is how the gateway receives the namespace's live messages:
	// LiveAuto (""), LiveChannel or LiveNamespace (wildcard.go).
	Live string
}

// DefaultStreamMaxBytes bounds a namespace's stream when its config gives
// no max_bytes: without one, a client pushing large messages to many
// channels could fill the disk until max_age caught up.
const DefaultStreamMaxBytes = 1 << 30

// streamName is what a persistent namespace may be called: it becomes
// part of the stream's name and subjects (the namespace policy allows no
// other names either).
var streamName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// validateStreams refuses stream settings JetStream would refuse later,
// or worse, accept as something else.
func validateStreams(sts map[string]Stream) error {
	for name, st := range sts {
		if !streamName.MatchString(name) {
			return fmt.Errorf("natsbroker: namespace %q: names are 1-64 characters of [A-Za-z0-9_-]", name)
		}
		switch st.Live {
		case "", LiveAuto, LiveChannel, LiveNamespace:
		default:
			return fmt.Errorf("natsbroker: namespace %q: live subscription must be %q, %q or %q", name, LiveAuto, LiveChannel, LiveNamespace)
		}
		if st.MaxAge < 0 || st.MaxBytes < -1 || st.MaxMsgsPerChannel < 0 || st.Replicas < 0 || st.Replicas > 5 {
			return fmt.Errorf("natsbroker: namespace %q: stream limits out of range", name)
		}
	}
	return nil
}

// minLimit is the lowest of the positive limits given (0: none).
func minLimit(ls ...int64) int64 {
	var m int64
	for _, l := range ls {
		if l > 0 && (m == 0 || l < m) {
			m = l
		}
	}
	return m
}

// nsState is what the broker knows about one persistent namespace.
type nsState struct {
	name   string
	stream string
	cfg    Stream

	mu      sync.Mutex
	epoch   string
	created string // wire.MetaCreated's form of the incarnation epoch names
	// maxPer is the lowest per-subject limit the incarnation is known to
	// have had (0: none); the anchor check reads it, since an operator
	// may change the limit.
	maxPer int64

	// life serializes every read of the stream's epoch with its
	// application (creation, advisories, periodic refresh): without it a
	// reading taken before a delete could be applied after the recreate
	// and flip the namespace back to a dead epoch.
	life sync.Mutex

	refreshing atomic.Bool // an asynchronous epoch check is under way

	recent recentLast // the stream's last sequence, recently read (head.go)

	live nsLive // the namespace's live channels and how they are fed (wildcard.go)
}

func (n *nsState) getEpoch() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch
}

func (n *nsState) perChannelLimit() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.maxPer
}

// limits is the namespace config's limits in stream terms, and their
// record for wire.MetaLimits.
func (c Stream) limits() (maxAge time.Duration, maxBytes, maxPer int64, replicas int, record string) {
	replicas = c.Replicas
	if replicas == 0 {
		replicas = 1
	}
	maxBytes, maxPer = c.MaxBytes, c.MaxMsgsPerChannel
	if maxBytes == 0 {
		maxBytes = DefaultStreamMaxBytes
	}
	if maxPer == 0 {
		maxPer = -1
	}
	record = fmt.Sprintf("max_age=%s max_bytes=%d max_msgs_per_channel=%d replicas=%d", c.MaxAge, maxBytes, maxPer, replicas)
	return c.MaxAge, maxBytes, maxPer, replicas, record
}

// streamConfig is the stream Fabric creates for a namespace.
func (b *Broker) streamConfig(n *nsState) jetstream.StreamConfig {
	maxAge, maxBytes, maxPer, replicas, record := n.cfg.limits()
	cfg := jetstream.StreamConfig{
		Name:              n.stream,
		Description:       "Fabric history of namespace " + n.name,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		MaxAge:            maxAge,
		MaxBytes:          maxBytes,
		MaxMsgs:           -1,
		MaxMsgsPerSubject: maxPer,
		Metadata:          map[string]string{wire.MetaLimits: record},
	}
	b.ownSettings(n, &cfg)
	return cfg
}

// ownSettings sets what Fabric owns in a namespace's stream: what
// delivery, replay and their proofs depend on. Everything else (limits
// changed by hand, description, compression, placement...) belongs to
// the operator and is left as found (docs/history.md, "Who owns what").
func (b *Broker) ownSettings(n *nsState, c *jetstream.StreamConfig) {
	c.Subjects = []string{b.prefix + "." + n.name, b.prefix + "." + n.name + ".>"}
	c.Retention = jetstream.LimitsPolicy
	c.Discard = jetstream.DiscardOld
	c.Duplicates = 2 * time.Minute
	// Direct Get serves replay from any current replica without a
	// consumer.
	c.AllowDirect = true
	// Purges and deletes made around Fabric cannot be noticed in time
	// (JetStream sends no reliable advisory for them), so the stream
	// refuses them unless the namespace opts out. JetStream applies the
	// refusal to every API purge and delete, Fabric's own included
	// (nats-server jetstream_api.go: "stream purge not permitted",
	// "message delete not permitted"); neither flag can be lifted by an
	// update (stream.go: "can not cancel deny purge"), and roll-ups need
	// the purge permission too. So Fabric's moderation does not depend
	// on them: it stores a mark in the stream that every reader obeys
	// (moderate.go), and removes the bytes too where the stream allows.
	c.DenyPurge = c.DenyPurge || !n.cfg.AllowPurge
	c.DenyDelete = c.DenyDelete || !n.cfg.AllowDelete
	c.AllowRollup = false
	// Every stored message is republished with its sequence and the
	// previous sequence on its subject: the gap-detecting live feed.
	c.RePublish = &jetstream.RePublish{Source: b.prefix + ".>", Destination: b.livePrefix + ".>"}
}

// incarnation decides the epoch of the stream described by info, and
// whether the metadata should be rewritten to record it: wire.Epoch, the
// rule the publisher library applies too, given the incarnation n knows.
func incarnation(n *nsState, info *jetstream.StreamInfo) (epoch, created string, record bool) {
	n.mu.Lock()
	known := n.created
	n.mu.Unlock()
	return wire.Epoch(info, known)
}

// EnsureStreams creates or updates the stream of every persistent
// namespace and learns their epochs. It is idempotent and safe when several
// gateways start at once (the loser of a create race updates instead). A
// configuration the server rejects is returned as an error.
func (b *Broker) EnsureStreams(ctx context.Context) error {
	for _, n := range b.namespaces {
		if err := b.ensureStream(ctx, n); err != nil {
			return err
		}
	}
	b.advOnce.Do(func() {
		// Stream lifecycle advisories: a deleted stream is recreated (new
		// epoch); a recreated, restored or edited one is re-read.
		sub, err := b.nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.*.*", b.onAdvisory)
		if err == nil {
			b.advSub = sub
			err = b.watchMarks()
		}
		if err == nil {
			err = b.roundTrip(ctx) // registered before EnsureStreams returns
		}
		if err != nil {
			b.log.Warn("natsbroker: cannot watch stream advisories", "err", err)
		}
	})
	return nil
}

func (b *Broker) ensureStream(ctx context.Context, n *nsState) error {
	n.life.Lock()
	defer n.life.Unlock()
	return b.ensureStreamLocked(ctx, n)
}

func (b *Broker) ensureStreamLocked(ctx context.Context, n *nsState) error {
	var lastErr error
	// Retried until ctx ends (every caller bounds it): on a fresh cluster
	// the peers' reports reach the meta leader at the pace of route
	// (re)connects, which a loaded machine stretches past any fixed count.
	for attempt := 0; ctx.Err() == nil; attempt++ {
		// Short attempts: on a fresh cluster, a stream another gateway just
		// created may not have a leader yet, and a request to it goes
		// unanswered; retrying soon beats waiting out the whole deadline.
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		done, err := b.ensureAttempt(actx, n)
		cancel()
		if done {
			return err
		}
		lastErr = err
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt+1)*100*time.Millisecond, time.Second)):
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return fmt.Errorf("namespace %q: cannot create stream %s: %w", n.name, n.stream, lastErr)
}

// ensureAttempt makes one attempt; done=false means retry.
func (b *Broker) ensureAttempt(ctx context.Context, n *nsState) (done bool, err error) {
	st, err := b.js.Stream(ctx, n.stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		created, err := b.js.CreateStream(ctx, b.streamConfig(n))
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || retryable(err) {
			return false, err // another gateway (or an operator) won the race, no leader yet, or peers not reported yet (10005)
		}
		if err != nil {
			return true, fmt.Errorf("namespace %q: cannot create stream %s: %w", n.name, n.stream, err)
		}
		if st := created.CachedInfo().State; st.LastSeq > 0 {
			// A stream created a moment ago cannot hold messages: the
			// server sends its delete advisory before it removes the old
			// incarnation's files (nats-server 2.15 stream.stop), and a
			// create in that window reopens them into a stream that never
			// acknowledges a publish. Remove it and try again later.
			_ = b.js.DeleteStream(ctx, n.stream)
			return false, fmt.Errorf("stream %s reopened a deleted incarnation's files (last seq %d)", n.stream, st.LastSeq)
		}
		st = created
	case retryable(err):
		return false, err
	case err != nil:
		return true, fmt.Errorf("namespace %q: cannot read stream %s: %w", n.name, n.stream, err)
	}
	info := st.CachedInfo()
	cfg, changed, err := b.reconcile(n, info)
	if err != nil {
		// Still learn which incarnation this is: a channel must never
		// take it for the one before.
		b.learn(n, info)
		return true, err
	}
	if changed {
		upd, err := b.js.UpdateStream(ctx, cfg)
		if err != nil {
			if retryable(err) {
				return false, err
			}
			return true, fmt.Errorf("namespace %q: stream %s exists with a configuration Fabric cannot apply: %w", n.name, n.stream, err)
		}
		info = upd.CachedInfo()
	}
	b.learn(n, info)
	return true, nil
}

// reconcile returns the stream's config with what Fabric owns applied:
// its own settings, the namespace config's limits when the config changed
// them since Fabric last applied them, and the incarnation's epoch.
func (b *Broker) reconcile(n *nsState, info *jetstream.StreamInfo) (jetstream.StreamConfig, bool, error) {
	old := info.Config
	cfg := old
	cfg.Metadata = make(map[string]string, len(old.Metadata)+3)
	for k, v := range old.Metadata {
		cfg.Metadata[k] = v
	}
	b.ownSettings(n, &cfg)
	if old.DenyPurge && n.cfg.AllowPurge || old.DenyDelete && n.cfg.AllowDelete {
		return cfg, false, fmt.Errorf("namespace %q: allow_purge/allow_delete cannot apply to stream %s: it denies purges or deletes, and JetStream cannot lift that; recreate the stream to opt out", n.name, n.stream)
	}
	maxAge, maxBytes, maxPer, replicas, record := n.cfg.limits()
	if old.Metadata[wire.MetaLimits] != record {
		cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgsPerSubject, cfg.Replicas = maxAge, maxBytes, maxPer, replicas
		cfg.Metadata[wire.MetaLimits] = record
	} else if old.MaxAge != maxAge || old.MaxBytes != maxBytes || old.MaxMsgsPerSubject != maxPer || old.Replicas != replicas {
		b.log.Info("natsbroker: keeping stream limits changed by hand (the namespace config did not change them)", "stream", n.stream)
	}
	epoch, created, _ := incarnation(n, info)
	cfg.Metadata[wire.MetaEpoch], cfg.Metadata[wire.MetaCreated] = epoch, created
	rec, _ := strconv.ParseInt(old.Metadata[wire.MetaMinPerChannel], 10, 64)
	if m := minLimit(rec, old.MaxMsgsPerSubject, cfg.MaxMsgsPerSubject); m > 0 {
		cfg.Metadata[wire.MetaMinPerChannel] = strconv.FormatInt(m, 10)
	}
	return cfg, !reflect.DeepEqual(normalize(old), normalize(cfg)), nil
}

// normalize drops what the server fills in on its own, so that a config
// Fabric would leave as it is compares equal to the stream's.
func normalize(c jetstream.StreamConfig) jetstream.StreamConfig {
	md := map[string]string{}
	for k, v := range c.Metadata {
		if !strings.HasPrefix(k, "_nats.") {
			md[k] = v
		}
	}
	c.Metadata = md
	return c
}

// learn applies what a stream's info says: its epoch and per-channel
// limit.
func (b *Broker) learn(n *nsState, info *jetstream.StreamInfo) {
	epoch, created, _ := incarnation(n, info)
	rec, _ := strconv.ParseInt(info.Config.Metadata[wire.MetaMinPerChannel], 10, 64)
	n.mu.Lock()
	known := int64(0)
	if n.created == created {
		known = n.maxPer
	}
	n.maxPer = minLimit(known, rec, info.Config.MaxMsgsPerSubject)
	n.created = created
	n.mu.Unlock()
	b.setEpoch(n, epoch)
}

// retryable reports errors of a cluster that is still forming: no answer
// yet (no leader), no JetStream responders, or too few peers online for the
// replicas (10005) right after the nodes started. A configuration error is
// not retried: it stops the gateway with the server's words.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoSuitablePeers
}

// setEpoch records the namespace's epoch; when it changed, every live
// subscription of the namespace is reset (its clients must resume anew).
func (b *Broker) setEpoch(n *nsState, epoch string) {
	n.mu.Lock()
	old := n.epoch
	n.epoch = epoch
	n.mu.Unlock()
	if old != "" && old != epoch {
		b.log.Warn("natsbroker: stream epoch changed; clients will resume anew", "stream", n.stream)
		b.resetNamespace(n)
	}
}

// recreateDelay is how long a deleted stream stays deleted before Fabric
// recreates it: an operator restoring it (nats stream add from a saved
// config, a backup tool) gets the first go. Whoever wins, the other's
// create fails (a stream name is taken once), and the winner's incarnation
// gets an epoch of its own, so the two never mix.
const recreateDelay = 2 * time.Second

func (b *Broker) onAdvisory(m *nats.Msg) {
	i := strings.LastIndexByte(m.Subject, '.')
	name := m.Subject[i+1:]
	kind := m.Subject[len("$JS.EVENT.ADVISORY.STREAM."):i]
	var n *nsState
	for _, ns := range b.namespaces {
		if ns.stream == name {
			n = ns
		}
	}
	if n == nil {
		return
	}
	// Off the subscription goroutine: ensureStream makes API requests.
	go func() {
		if kind == "DELETED" {
			// Let the server finish removing the old files first (see
			// ensureAttempt), and give an operator who is recreating the
			// stream by hand the first go.
			select {
			case <-time.After(recreateDelay):
			case <-b.stop:
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.life.Lock()
		defer n.life.Unlock()
		switch kind {
		case "DELETED", "CREATED":
			// Recreate it, or adopt whoever's incarnation is there: record
			// its epoch and Fabric's own settings.
			if err := b.ensureStreamLocked(ctx, n); err != nil {
				b.log.Error("natsbroker: cannot recreate or adopt stream", "stream", n.stream, "err", err)
			}
		case "RESTORE_COMPLETE":
			// A restore brings back older history under the old
			// metadata; offsets handed out since may now name other
			// messages. The server gives the restored stream a creation
			// time of its own, and the restore is a new incarnation.
			if err := b.ensureStreamLocked(ctx, n); err != nil {
				b.log.Error("natsbroker: cannot adopt restored stream", "stream", n.stream, "err", err)
			}
		default: // UPDATED: learn, never revert an operator's edit
			b.refreshLocked(ctx, n)
		}
	}()
}

// namespaceOf returns the persistent namespace state of topic, or nil.
func (b *Broker) namespaceOf(topic string) *nsState {
	ns, _, _ := strings.Cut(topic, ":")
	return b.namespaces[ns]
}

// streamState reads the stream's first and last sequence (a request to the
// stream leader: only on rare paths).
func (b *Broker) streamState(ctx context.Context, n *nsState) (first, last uint64, err error) {
	st, err := b.js.Stream(ctx, n.stream)
	if err != nil {
		return 0, 0, err
	}
	s := st.CachedInfo().State
	return s.FirstSeq, s.LastSeq, nil
}

var _ broker.History = (*Broker)(nil)

// errCodeNoSuitablePeers is JetStream's "no suitable peers for placement"
// (nats-server JSClusterNoPeersErrF), which nats.go has no constant for.
const errCodeNoSuitablePeers jetstream.ErrorCode = 10005
