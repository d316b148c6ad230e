package session

// Reasons sent in {"status":"error","response":{"reason":…}} replies. Part
// of the wire contract: clients match on them.
const (
	ReasonBadRequest     = "bad_request"
	ReasonUnmatchedTopic = "unmatched topic"
	ReasonInvalidTopic   = "invalid_topic"
	ReasonUnauthorized   = "unauthorized"
	ReasonTooManyJoined  = "too many channels joined"
	ReasonUnavailable    = "unavailable"
	ReasonPublishFailed  = "publish_failed"
	ReasonNoHandler      = "no_handler"
	ReasonTimeout        = "timeout"
	ReasonRateLimited    = "rate_limited"
	// ReasonReservedEvent: a push named like an event phoenix.js,
	// Phoenix.Presence or Fabric treat specially (phoenix.ReservedEvent).
	ReasonReservedEvent = "reserved_event"
	// ReasonInvalidEvent: a push event name that is empty, over 255
	// bytes, surrounded by spaces, or holds control characters or a lone
	// surrogate escape.
	ReasonInvalidEvent = "invalid_event"
	// ReasonTooLarge: the bus refused the payload as over its size cap.
	ReasonTooLarge = "too_large"
	// ReasonInvalidReply: the service handling a routed push answered
	// with JSON that is not an object (Phoenix replies are maps).
	ReasonInvalidReply = "invalid_reply"
	// ReasonTooManyJoinedByUser: the connection's user has MaxChannelsPerUser
	// channels joined across all its connections on this gateway.
	ReasonTooManyJoinedByUser = "too many channels joined by user"
)

func reason(r string) []byte {
	return append(append([]byte(`{"reason":`), quote(r)...), '}')
}

func quote(s string) []byte {
	// Reasons are fixed ASCII constants without quotes or backslashes.
	return append(append([]byte{'"'}, s...), '"')
}
