// Package hub is the gateway's channel registry: for every topic with local
// members it holds exactly one broker subscription, and it fans each
// message out to the members, encoded once per protocol variant.
//
// Persistent topics (the broker keeps history) also carry offsets: the hub
// keeps the channel's position and a ring of its latest messages, answers a
// fresh join with the position and a resume with exactly the messages the
// client missed — from the ring when it covers them, otherwise paged from
// the broker — and attaches the member to the live feed with no gap and no
// duplicate at the junction (both happen under the channel lock that
// fan-out takes).
//
// Concurrency: every method is safe for concurrent use. Fan-out runs on the
// broker's delivery goroutine for the subscription and never blocks:
// transport.Conn.Send only queues, and a connection that cannot keep up is
// closed by its transport (4008) rather than slowing the channel. Lock
// order: shard.mu before channel.mu. Under channel.mu the hub calls no code
// of its members except Listener.JoinReply, which only encodes.
//
// Writing: everything the hub sends a member — its join reply, its replay,
// the live messages — is queued on the member's connection under the
// channel's lock, in that order, and nothing after Leave returns (a replay
// in progress included); see docs/architecture.md, "Who writes to a
// connection".
package hub

import (
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

const shards = 64

// Ring defaults (Config.RingBytes, Config.RingBudget).
const (
	DefaultRingBytes  = 1 << 20
	DefaultRingBudget = 64 << 20
)

// Config configures a Hub.
type Config struct {
	Broker broker.Broker
	// Namespaces says which topics keep history (nil: none); their
	// channels need a broker that implements broker.History.
	Namespaces *namespace.Set
	// LeaveGrace keeps a channel's subscription (and its ring) this long
	// after its last member left, so a client that rejoins at once
	// (reconnect, page reload) resumes from memory (default 2 s).
	LeaveGrace time.Duration
	// SubscribeTimeout bounds the broker subscription of a first join
	// (default 5 s).
	SubscribeTimeout time.Duration
	// RingSize is how many recent messages a persistent channel keeps for
	// resumes (default 1024). RingBytes bounds one channel's ring (default
	// 1 MiB) and RingBudget all rings of the hub (default 64 MiB): a
	// channel keeps at most min(RingBytes, RingBudget / persistent
	// channels), so the more channels, the shorter each ring, and always
	// its latest message. A message costs its payload three times (the
	// message, its frame, the frame's WebSocket encoding) plus
	// entryOverhead; see docs/limits.md.
	RingSize   int
	RingBytes  int
	RingBudget int64
	// ReplayPage is the number of messages sent per replay step
	// (default 256); between steps the replay waits until the member's
	// connection has at most ReplayBacklog bytes queued (default 64 KiB),
	// woken by the transport (transport.Conn.Drained), never polling. The
	// replay's frames go through the connection's queue like any other:
	// its slow-consumer bound applies to them.
	ReplayPage    int
	ReplayBacklog int
	// ReplayTimeout bounds one member's whole replay (default 60 s).
	ReplayTimeout time.Duration
	// Compression, when set, gives a topic's compression class; the
	// messages the hub frames carry it (see transport.Compression).
	Compression func(topic string) *transport.Compression
	Logger      *slog.Logger
}

// JoinResult is what a join learned; the session turns it into the reply.
type JoinResult struct {
	Persistent bool
	// Head is the channel's position when the member was attached.
	Head broker.Position
	// Resumed is true when the member asked to resume; then Recovered
	// tells whether it gets exactly what it missed, or Reason why not.
	Resumed   bool
	Recovered bool
	Reason    string
}

// Member is one channel instance of one connection.
type Member struct {
	Conn    transport.Conn
	Version phoenix.Version
	// TextOnly members (LongPoll: the client JSON-parses every message)
	// get binary payloads as {"base64": …} in a text frame, like v1.
	TextOnly bool
	// Key identifies the instance (the session's channel pointer); the
	// same key must be used to leave. When it implements Listener, the hub
	// sends its join reply and tells it about a reset.
	Key any
	// Resume asks to continue after this position (persistent topics).
	Resume *broker.Position
}

// member is how a channel keeps a Member: without the resume position,
// which only attaching needs, nor the offset a replay ran ahead to
// (channel.ahead): 40 bytes per member of every channel.
type member struct {
	Conn     transport.Conn
	Key      any
	Version  phoenix.Version
	TextOnly bool
}

// Listener is implemented by member keys that have a join reply and want
// to know about resets. A method pair on the key costs a member nothing,
// where two closures would cost every joined channel of every connection
// about 70 bytes.
type Listener interface {
	// JoinReply returns the member's join reply for r, which the hub
	// queues on the member's connection under the channel lock, before
	// any message of the channel (so the reply precedes the replay and
	// the live feed); nil sends nothing. ok false means the member
	// withdrew (its instance left or was replaced): then nothing is sent
	// and the member is not attached (Join returns ErrWithdrawn). It is
	// called at most once per join, under the hub's shard and channel
	// locks, often on an epoll loop: it must only encode — no locks, no
	// I/O, no call into the hub. What else a join sets off (presence,
	// lifecycle events) the caller does after TryJoin or Join returned.
	JoinReply(JoinResult) (reply *transport.Message, ok bool)
	// Reset is called, without hub locks, when the member was dropped
	// because the channel's history can no longer continue what it
	// received (stream recreated, messages lost mid-replay); the client
	// must rejoin with its offset. The hub sends the member nothing
	// after it.
	Reset()
}

// ErrWithdrawn is Join's answer when the member's JoinReply said it
// withdrew (it left while joining): it was not attached, and nothing was sent.
var ErrWithdrawn = errors.New("hub: member withdrew before it was attached")

// Hub is the registry.
type Hub struct {
	cfg    Config
	hist   broker.History // nil when the broker keeps no history
	seed   maphash.Seed
	shards [shards]shard

	channels     atomic.Int64
	persistent   atomic.Int64 // channels with a ring
	ringBytes    atomic.Int64 // what every ring holds (entry costs)
	sweeping     atomic.Bool  // a sweep trims every ring to its share
	swept        atomic.Int64 // ringBytes when the last sweep began
	received     atomic.Uint64
	delivered    atomic.Uint64
	replayed     atomic.Uint64
	encodeErrors atomic.Uint64
	resumes      [len(resumeReasons)]atomic.Uint64
	fanout       latency
}

type channel struct {
	h     *Hub
	topic string
	// ready is closed once the subscription is settled, and then replaced
	// by the shared settledReady: a channel of its own (96 bytes) for
	// every live topic would outlive its use. Read and replaced under the
	// shard lock.
	ready      chan struct{}
	err        error // set before ready is closed
	sub        broker.Subscription
	joining    int32 // joins in progress; guarded by the shard lock
	persistent bool
	grace      *time.Timer // pending drop; guarded by the shard lock

	mu      sync.Mutex
	members []member
	index   map[any]int
	// ahead holds, by key, members whose replay ran ahead of the live
	// feed (a page read from the stream past this gateway's last
	// message): the live messages up to that offset reached them
	// already. Nil but for the few messages after such a replay.
	ahead map[any]uint64
	epoch string
	last  uint64 // offset of the last message (or the start position)
	ring  ring

	// replaying holds the keys of members being replayed to (not yet in
	// members): Leave removes a key from here, and the replay stops at
	// its next step, so nothing reaches a member after it left. A nil map
	// (8 bytes) while no replay runs: one channel per user is common.
	replaying map[any]struct{}

	// fetching admits one replay fetch at a time (never held with mu):
	// a reconnect wave's resumes wait for the first one's page, which
	// backfill keeps in the ring, instead of all reading the stream at
	// once (10,000 clients of 100 channels: 10,000 fetches, which ran
	// past the join timeout, against 100).
	fetching sync.Mutex
}

// New returns a Hub.
func New(cfg Config) *Hub {
	if cfg.LeaveGrace <= 0 {
		cfg.LeaveGrace = 2 * time.Second
	}
	if cfg.SubscribeTimeout <= 0 {
		cfg.SubscribeTimeout = 5 * time.Second
	}
	if cfg.RingSize <= 0 {
		cfg.RingSize = 1024
	}
	if cfg.RingBytes <= 0 {
		cfg.RingBytes = DefaultRingBytes
	}
	if cfg.RingBudget <= 0 {
		cfg.RingBudget = DefaultRingBudget
	}
	if cfg.ReplayPage <= 0 {
		cfg.ReplayPage = 256
	}
	if cfg.ReplayBacklog <= 0 {
		cfg.ReplayBacklog = 64 << 10
	}
	if cfg.ReplayTimeout <= 0 {
		cfg.ReplayTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed()}
	h.hist, _ = cfg.Broker.(broker.History)
	for i := range h.shards {
		h.shards[i].topics = make(map[string]*channel)
	}
	return h
}
