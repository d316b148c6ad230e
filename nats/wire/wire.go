// Package wire is the Fabric↔NATS contract: the header names, defaults,
// stream names and stream metadata that gateways (nats/natsbroker), the
// publisher library and any plain NATS client must agree on, and the one
// rule that names a stream's incarnation (its epoch). Everything that
// speaks to NATS takes these names from here, so the two sides cannot
// drift apart.
package wire

import (
	"crypto/sha256"
	"encoding/base32"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of a message and of a gateway's subjects.
const (
	// DefaultPrefix is the subject prefix when none is configured (the
	// gateway's --subject-prefix, publisher.Config.Prefix).
	DefaultPrefix = "fabric"
	// DefaultEvent is the event of a message without HeaderEvent (or
	// published with event "").
	DefaultEvent = "message"
	// MaxEventLen is the longest event name delivered or published: a
	// Phoenix v2 binary frame stores the event's length in one byte.
	// gateway/phoenix keeps its own copy of this limit: the codec imports
	// nothing of the module (test/layers), and the limit is its frame
	// format's, which this one follows.
	MaxEventLen = 255
)

// Headers of a broadcast message (<prefix>.<topic subject>).
const (
	// HeaderEvent carries the Phoenix event name.
	HeaderEvent = "Fabric-Event"
	// HeaderTime carries the publish time of a core NATS message, in Unix
	// nanoseconds (decimal), for the gateways' fan-out latency metric.
	// The publisher library and the gateway's own core publishes set it;
	// a message JetStream stored carries HeaderStored instead. Looked up
	// with exactly this spelling.
	HeaderTime = "Fabric-Time"
	// HeaderStored is the time JetStream stored a message (RFC 3339,
	// UTC), which RePublish and Direct Get add (nats-server JSTimeStamp).
	HeaderStored = "Nats-Time-Stamp"
	// HeaderContentType marks the payload's type: a non-JSON type makes
	// the gateway send a binary frame.
	HeaderContentType = "Content-Type"
)

// Headers of a routed push or lifecycle event sent to a push handler
// (<prefix>_in.<topic subject>), and of its reply.
const (
	HeaderSub        = "Fabric-Sub"         // the connection's user (token subject)
	HeaderConn       = "Fabric-Conn"        // the connection's id
	HeaderJoinParams = "Fabric-Join-Params" // the channel's join payload (JSON)
	HeaderTopic      = "Fabric-Topic"       // the channel's topic
	// HeaderAssigns carries the assigns a join hook gave the channel.
	HeaderAssigns = "Fabric-Assigns"
	// HeaderStatus in a handler's reply: "error" makes the client's
	// push receive "error" instead of "ok".
	HeaderStatus = "Fabric-Status"
)

// Presence traffic between gateways (<prefix>_presence.<topic subject>,
// bodies are gateway/presence's) and the presence bus's hello
// (<prefix>_presence_hello.<namespace>, a request each gateway answers).
const (
	// HeaderPresenceFrom names the gateway that sent a presence message
	// (random per broker): a gateway that hears no other knows no other
	// gateway can have members, and skips state requests nobody answers.
	HeaderPresenceFrom = "Fabric-Presence-From"
)

// Headers of a moderation mark (a message removed, a channel cleared).
const (
	HeaderMod       = "Fabric-Mod"        // what the mark records: clear or remove
	HeaderModOffset = "Fabric-Mod-Offset" // clear: the channel's last offset it covers; remove: the removed offset
)

// StreamName is the JetStream stream of a persistent namespace.
func StreamName(ns string) string { return "FABRIC_" + ns }

// Stream metadata keys Fabric owns.
const (
	// MetaEpoch is the epoch gateways of every version read. Gateways
	// before 2026-12 named an incarnation by this key alone, which a
	// stream re-added from a saved config (metadata included) carries over.
	MetaEpoch = "fabric_epoch"
	// MetaCreated is the creation time (Unix ns, the server's StreamInfo
	// Created) of the incarnation MetaEpoch was chosen for. A saved
	// config carries it too, but the server gives every new stream a new
	// creation time, so a mismatch unmasks a re-added stream.
	MetaCreated = "fabric_created"
	// MetaLimits records the namespace config's limits as Fabric last
	// applied them: a stream limit that differs from it was changed by
	// hand and is kept until the config's own value changes.
	MetaLimits = "fabric_limits"
	// MetaMinPerChannel is the lowest per-channel limit the stream has
	// had: a limit raised after it cut channels does not undo the cuts.
	MetaMinPerChannel = "fabric_min_per_channel"
)

// Epoch decides the epoch of the stream incarnation info describes, as
// every gateway and the publisher library must: created is that
// incarnation's MetaCreated value, and record says the metadata does not
// yet record (epoch, created) and should be rewritten. known is the
// MetaCreated of the incarnation the caller adopted before ("" if none).
//
// Invariant: two incarnations of a stream (created, deleted and created
// again by anyone, from any config) never share an epoch, as long as the
// server gives them different creation times. The metadata alone cannot
// say it (a saved config carries MetaEpoch and MetaCreated over); the
// server's Created can, and MetaCreated ties the epoch to it. An
// unrecorded incarnation's epoch is derived from the stream's name and
// creation time alone, so every reader of the same StreamInfo computes
// the same epoch without waiting for one of them to record it.
func Epoch(info *jetstream.StreamInfo, known string) (epoch, created string, record bool) {
	created = strconv.FormatInt(info.Created.UnixNano(), 10)
	md := info.Config.Metadata
	e, c := md[MetaEpoch], md[MetaCreated]
	switch {
	case e != "" && c == created:
		return e, created, false
	case e != "" && c == "" && (known == "" || known == created):
		// Written by a gateway of an earlier version, which recorded no
		// creation time: keep its epoch (no needless epoch_changed during
		// a rolling upgrade) and record the time. A stream re-added from
		// such a saved config while no newer gateway watched is taken for
		// the old one: the upgrade note in docs/history.md says so.
		return e, created, true
	default:
		return derivedEpoch(info.Config.Name, created), created, true
	}
}

func derivedEpoch(stream, created string) string {
	h := sha256.Sum256([]byte(stream + "\x00" + created))
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:10]))
}
