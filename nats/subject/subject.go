package subject

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/fabric-rt/fabric/nats/wire"
)

// MaxTopicLen is the longest topic, in bytes, that Map accepts. It keeps the
// escaped subject (at most three bytes per topic byte plus the prefix) far
// below the 4096-byte protocol control line and keeps per-message subject
// overhead in JetStream bounded.
const MaxTopicLen = 255

var (
	// ErrInvalidTopic is wrapped by every error Map returns for a bad topic.
	ErrInvalidTopic = errors.New("subject: invalid topic")
	// ErrInvalidPrefix is wrapped by errors about the prefix.
	ErrInvalidPrefix = errors.New("subject: invalid prefix")
	// ErrInvalidSubject is wrapped by every error Unmap returns for a subject
	// that Map could not have produced.
	ErrInvalidSubject = errors.New("subject: invalid subject")
)

// Error carries why a topic, prefix or subject was refused. Kind is one of
// ErrInvalidTopic, ErrInvalidPrefix or ErrInvalidSubject, so errors.Is works;
// Reason is short, fixed text and never echoes the (client-supplied) input,
// so it is safe to log and to return to clients.
type Error struct {
	Kind   error
	Reason string
}

func (e *Error) Error() string { return e.Kind.Error() + ": " + e.Reason }

// Unwrap lets errors.Is(err, ErrInvalidTopic) and friends match.
func (e *Error) Unwrap() error { return e.Kind }

func topicErr(reason string) error   { return &Error{Kind: ErrInvalidTopic, Reason: reason} }
func prefixErr(reason string) error  { return &Error{Kind: ErrInvalidPrefix, Reason: reason} }
func subjectErr(reason string) error { return &Error{Kind: ErrInvalidSubject, Reason: reason} }

const upperHex = "0123456789ABCDEF"

// keep reports whether b is written to the subject as itself.
func keep(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '_' || b == '-'
}

// ValidPrefix reports (as a nil error) whether prefix is one or more literal
// NATS tokens separated by ".", each made only of [A-Za-z0-9_-]. That is
// stricter than NATS needs, on purpose: it rules out wildcards, whitespace
// and "$" (reserved system subjects) without a list of special cases.
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return prefixErr("empty")
	}
	tokenLen := 0
	for i := 0; i < len(prefix); i++ {
		c := prefix[i]
		switch {
		case c == '.':
			if tokenLen == 0 {
				return prefixErr("empty token")
			}
			tokenLen = 0
		case keep(c):
			tokenLen++
		default:
			return prefixErr("only [A-Za-z0-9_-] tokens separated by '.' are allowed")
		}
	}
	if tokenLen == 0 {
		return prefixErr("empty token")
	}
	return nil
}

// checkTopic validates topic and returns the length of its subject suffix
// (everything after "prefix."), so Map can allocate once.
func checkTopic(topic string) (int, error) {
	switch {
	case topic == "":
		return 0, topicErr("empty")
	case len(topic) > MaxTopicLen:
		return 0, topicErr("longer than 255 bytes")
	}
	n := 0
	segStart := 0
	for i := 0; i < len(topic); {
		c := topic[i]
		if c < utf8.RuneSelf {
			switch {
			case c == ':':
				if err := checkSegment(topic[segStart:i]); err != nil {
					return 0, err
				}
				segStart = i + 1
				n++ // the "." that replaces ":"
			case c < 0x20 || c == 0x7F:
				return 0, topicErr("control character")
			case keep(c):
				n++
			default:
				n += 3
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(topic[i:])
		if r == utf8.RuneError && size == 1 {
			return 0, topicErr("invalid UTF-8")
		}
		// C1 controls (U+0080..U+009F, e.g. NEL) are refused like C0 ones:
		// they have no business in a channel name and some log viewers
		// treat them as line breaks.
		if unicode.IsControl(r) {
			return 0, topicErr("control character")
		}
		n += 3 * size
		i += size
	}
	if err := checkSegment(topic[segStart:]); err != nil {
		return 0, err
	}
	return n, nil
}

func checkSegment(seg string) error {
	switch seg {
	case "":
		return topicErr("empty segment")
	case "*", ">":
		// Escaping would make them harmless on the wire, but a topic that
		// reads like a grant pattern confuses authorization rules and logs.
		return topicErr("segment is a wildcard")
	}
	return nil
}

// Map returns the NATS subject for a Phoenix topic under prefix:
// Map("fabric", "room:lobby") == "fabric.room.lobby". Errors wrap
// ErrInvalidTopic or ErrInvalidPrefix.
func Map(prefix, topic string) (string, error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", err
	}
	n, err := checkTopic(topic)
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	sb.Grow(len(prefix) + 1 + n)
	sb.WriteString(prefix)
	sb.WriteByte('.')
	for i := 0; i < len(topic); i++ {
		c := topic[i]
		switch {
		case c == ':':
			sb.WriteByte('.')
		case keep(c):
			sb.WriteByte(c)
		default:
			sb.WriteByte('=')
			sb.WriteByte(upperHex[c>>4])
			sb.WriteByte(upperHex[c&0x0F])
		}
	}
	return sb.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	// Lower-case hex is refused: Map never writes it, and accepting it
	// would give two subjects for one topic.
	return 0, false
}

// Unmap is the inverse of Map: Unmap(prefix, Map(prefix, t)) == t. It
// refuses (with an error wrapping ErrInvalidSubject, or ErrInvalidPrefix)
// every subject that Map could not have produced for prefix, so
// Map(prefix, Unmap(prefix, s)) == s whenever Unmap succeeds.
func Unmap(prefix, subject string) (string, error) {
	if err := ValidPrefix(prefix); err != nil {
		return "", err
	}
	if len(subject) <= len(prefix)+1 || subject[:len(prefix)] != prefix || subject[len(prefix)] != '.' {
		return "", subjectErr("not under prefix")
	}
	rest := subject[len(prefix)+1:]
	buf := make([]byte, 0, len(rest))
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '.':
			buf = append(buf, ':')
		case keep(c):
			buf = append(buf, c)
		case c == '=':
			if i+2 >= len(rest) {
				return "", subjectErr("truncated escape")
			}
			hi, ok1 := unhex(rest[i+1])
			lo, ok2 := unhex(rest[i+2])
			if !ok1 || !ok2 {
				return "", subjectErr("bad escape")
			}
			b := hi<<4 | lo
			// An escaped kept byte or ":" is something Map never writes;
			// a decoded ":" would even change where segments split.
			if keep(b) || b == ':' {
				return "", subjectErr("non-canonical escape")
			}
			buf = append(buf, b)
			i += 2
		default:
			return "", subjectErr("bad byte")
		}
	}
	topic := string(buf)
	// Decoded bytes can still form a topic Map refuses (a "*" segment,
	// control characters, invalid UTF-8, too long, empty segments).
	if _, err := checkTopic(topic); err != nil {
		return "", subjectErr(err.(*Error).Reason)
	}
	return topic, nil
}

// ValidEvent reports whether event may travel in the Fabric-Event header
// and reach clients as a plain broadcast. "phx_" events are a channel's own
// control events (phx_close, phx_error, phx_reply would close, rejoin or
// answer clients' channels) and "fabric:" events are frames the gateway
// itself emits (fabric:offset): letting a publisher send either would let
// it drive other clients' channel state. Control characters would corrupt
// a NATS header block.
func ValidEvent(e string) bool {
	if e == "" || len(e) > wire.MaxEventLen || !utf8.ValidString(e) {
		return false
	}
	if strings.HasPrefix(e, "phx_") || strings.HasPrefix(e, "fabric:") {
		return false
	}
	for i := 0; i < len(e); i++ {
		if c := e[i]; c < 0x20 || c == 0x7F {
			return false
		}
	}
	return true
}
