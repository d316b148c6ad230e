package phoenix

import (
	"errors"
	"strconv"
	"strings"
)

// Version is the serializer version negotiated by the `vsn` query parameter.
type Version uint8

const (
	V1 Version = 1 // vsn 1.0.x: JSON objects {"topic","event","payload","ref","join_ref"?}
	V2 Version = 2 // vsn 2.0.x: JSON arrays + binary frames
)

// Reserved event and topic names.
const (
	EventJoin      = "phx_join"
	EventLeave     = "phx_leave"
	EventReply     = "phx_reply"
	EventClose     = "phx_close"
	EventError     = "phx_error"
	EventHeartbeat = "heartbeat"
	TopicPhoenix   = "phoenix"
)

// WebSocket close codes carried by ProtocolError. They mirror RFC 6455 so
// this package needs no dependency on the transport layer.
const (
	CloseUnsupportedData uint16 = 1003
	CloseInvalidPayload  uint16 = 1007
)

// ErrUnsupportedVsn is returned for a vsn Phoenix would not match; the
// WebSocket handshake should answer it with HTTP 403 before upgrading.
var ErrUnsupportedVsn = errors.New("phoenix: unsupported vsn")

// ErrFieldTooLong is returned by the binary encoders: the binary layout has
// one-byte length prefixes, and phoenix.js throws on longer fields anyway.
var ErrFieldTooLong = errors.New("phoenix: binary frame field longer than 255 bytes")

// ParseVsn maps the `vsn` query parameter to a Version. Phoenix matches with
// the requirements "~> 1.0.0" and "~> 2.0.0" and assumes 1.0.0 when the
// parameter is missing, so "" and any 1.0.x select V1 and any 2.0.x selects
// V2. Pre-release versions do not satisfy "~>" in Elixir, so they are
// rejected like every other string.
func ParseVsn(vsn string) (Version, error) {
	if vsn == "" {
		return V1, nil
	}
	switch {
	case strings.HasPrefix(vsn, "1.0.") && validPatch(vsn[4:]):
		return V1, nil
	case strings.HasPrefix(vsn, "2.0.") && validPatch(vsn[4:]):
		return V2, nil
	}
	return 0, ErrUnsupportedVsn
}

// validPatch accepts a semver patch number: digits without a leading zero,
// as Elixir's Version.parse requires.
func validPatch(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Ref is a join_ref or ref. phoenix.js sends decimal strings, and null for
// join_ref on heartbeats, broadcasts and server pushes (the client tells
// null from "" apart). Phoenix's server accepts any JSON value in both
// slots and echoes it back unchanged, and community clients rely on that
// (Python's phxsocket sends 0), so a ref that is not a plain string is kept
// as its JSON text (Raw) and written back byte for byte.
type Ref struct {
	S     string // the string; with Raw, the value's JSON text
	Valid bool   // false: null
	Raw   bool   // S is JSON text: a number, true, an object, a string with escapes...
}

// R returns a valid (non-null) string ref.
func R(s string) Ref { return Ref{S: s, Valid: true} }

// RawRef returns a ref holding the JSON value text as is; text must be
// valid JSON (the decoder only makes them from validated input).
func RawRef(text string) Ref { return Ref{S: text, Valid: true, Raw: true} }

// Null is the null ref.
var Null Ref

// String returns the ref as it would appear in JSON, for logs and tests.
func (r Ref) String() string {
	switch {
	case !r.Valid:
		return "null"
	case r.Raw:
		return r.S
	}
	return strconv.Quote(r.S)
}

// Text is the ref as a binary frame carries it (no quotes, "" for null), as
// Phoenix's to_string: a string's value, a number's digits. Rare path: only
// binary replies and pushes to clients that sent a raw ref take it.
func (r Ref) Text() string {
	switch {
	case !r.Valid:
		return ""
	case !r.Raw:
		return r.S
	case len(r.S) > 1 && r.S[0] == '"':
		if s, ok := unescape([]byte(r.S[1 : len(r.S)-1])); ok {
			return s
		}
	}
	return r.S
}

// Frame is one decoded client message. Payload aliases the input (valid only
// while the input is); the strings never do, so they may be kept after the
// read buffer is reused.
type Frame struct {
	JoinRef Ref
	Ref     Ref
	Topic   string
	Event   string
	Payload []byte // raw JSON text of the payload; for a binary push the raw bytes
	Binary  bool   // true when it came from a v2 binary frame (kind 0 push)
}

// ProtocolError means the message cannot be attributed to any request, so
// the only safe answer is closing the connection with Code.
type ProtocolError struct {
	Code   uint16
	Reason string
}

func (e *ProtocolError) Error() string {
	return "phoenix: protocol error " + strconv.Itoa(int(e.Code)) + ": " + e.Reason
}

// BadRequestError means the message is valid JSON with a readable ref and
// topic but the wrong shape. The session answers it with a phx_reply error
// {"reason":"bad_request"} echoing JoinRef/Ref/Topic and keeps the
// connection (docs/configuration.md, errors a client can see), so one buggy push does not cost the
// client all of its channels.
type BadRequestError struct {
	JoinRef, Ref Ref
	Topic        string
	Reason       string
	// Field is "" when the message's shape is wrong, or FieldTopic or
	// FieldEvent when that name cannot be decoded to a string (a lone
	// UTF-16 surrogate escape such as "\ud800": decoding it to U+FFFD
	// would make two inputs one name). For FieldTopic, Topic is "" and
	// TopicJSON is the topic as sent, so that the reply still reaches the
	// client's channel (see AppendReplyJSONTopic).
	Field     string
	TopicJSON string
	// Event is the message's event when it could be decoded (so that a
	// refused phx_join can be counted as a join).
	Event string
}

// Names of BadRequestError.Field.
const (
	FieldTopic = "topic"
	FieldEvent = "event"
)

func (e *BadRequestError) Error() string {
	return "phoenix: bad request on topic " + strconv.Quote(e.Topic) + ": " + e.Reason
}
