package phoenix

import (
	"errors"
	"strings"
)

// Why a client's event name is refused by CheckClientEvent.
var (
	// ErrReservedEvent: the name means something to phoenix.js, to
	// Phoenix.Presence or to the gateway itself (see ReservedEvent).
	ErrReservedEvent = errors.New("phoenix: reserved event name")
	// ErrInvalidEvent: empty, longer than MaxEventLen, surrounded by
	// spaces or holding control characters.
	ErrInvalidEvent = errors.New("phoenix: invalid event name")
)

// MaxEventLen is the longest event name: a v2 binary frame stores its
// length in one byte (and phoenix.js throws on longer ones).
const MaxEventLen = 255

// Prefixes and names that ReservedEvent refuses from clients.
const (
	// PrefixPhoenix starts the channel's own control events (phx_join,
	// phx_reply, phx_close, phx_error, phx_leave and any future one).
	PrefixPhoenix = "phx_"
	// PrefixChanReply starts the names phoenix.js gives replies
	// internally: channel.trigger("chan_reply_<ref>") resolves the push
	// with that ref, so a message by that name answers someone else's
	// push.
	PrefixChanReply = "chan_reply_"
	// PrefixFabric starts the frames the gateway itself sends
	// (fabric:offset).
	PrefixFabric = "fabric:"
	// EventPresenceState and EventPresenceDiff are Phoenix.Presence's
	// events: the JS Presence replaces or patches its member list with
	// whatever arrives under these names.
	EventPresenceState = "presence_state"
	EventPresenceDiff  = "presence_diff"
)

// ReservedEvent reports whether event is a name the unmodified phoenix.js
// client, its Presence or Fabric gives a meaning of its own. A message by
// such a name, delivered to a channel, would act as the server: close or
// rejoin channels, resolve other clients' pushes, rewrite every member's
// presence list. Clients may therefore never push one (WebSocket and
// LongPoll alike, whether the push is published or routed to a service);
// a backend service that means to send presence_state or presence_diff
// publishes it through the publisher, which is authorized separately.
func ReservedEvent(event string) bool {
	return strings.HasPrefix(event, PrefixPhoenix) ||
		strings.HasPrefix(event, PrefixChanReply) ||
		strings.HasPrefix(event, PrefixFabric) ||
		event == EventPresenceState || event == EventPresenceDiff
}

// CheckClientEvent is the one rule for the event name of a client push:
// nil, ErrInvalidEvent or ErrReservedEvent. The decoder already
// guarantees valid UTF-8.
func CheckClientEvent(event string) error {
	if event == "" || len(event) > MaxEventLen || event != strings.TrimSpace(event) {
		return ErrInvalidEvent
	}
	for i := 0; i < len(event); i++ {
		if c := event[i]; c < 0x20 || c == 0x7F {
			return ErrInvalidEvent
		}
	}
	if ReservedEvent(event) {
		return ErrReservedEvent
	}
	return nil
}
