package phoenix

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Decode decodes one client message. binary tells whether it came in a
// WebSocket binary frame, because Phoenix picks the decoder by opcode, not
// by content.
//
// Errors are *ProtocolError (close the connection with its Code) or
// *BadRequestError (reply bad_request, keep the connection). An invalid v
// returns ErrUnsupportedVsn; the handshake should have refused it already.
func Decode(v Version, binary bool, data []byte) (Frame, error) {
	switch v {
	case V1:
		if binary {
			return Frame{}, &ProtocolError{CloseUnsupportedData, "binary frame on the v1 JSON serializer"}
		}
		return decodeText(v, data)
	case V2:
		if binary {
			return decodeBinary(data)
		}
		return decodeText(v, data)
	}
	return Frame{}, ErrUnsupportedVsn
}

// Field kinds seen by the scanner for join_ref, ref, topic and event.
const (
	kAbsent uint8 = iota
	kNull
	kString
	kOther
)

// field locates one string-or-null element; start/end bound the string
// content without its quotes.
type field struct {
	kind       uint8
	esc        bool
	start, end int
}

// Indexes into a message's fields; v1 keys are mapped onto the v2 order.
const (
	fJoinRef = iota
	fRef
	fTopic
	fEvent
	nFields
)

// message is what the scanner found, before the shape is judged.
type message struct {
	f          [nFields]field
	payload    []byte
	hasPayload bool
}

func errInvalid(reason string) error { return &ProtocolError{CloseInvalidPayload, reason} }

func decodeText(v Version, data []byte) (Frame, error) {
	// Checked once for the whole text so the scanner can skip UTF-8 work;
	// a text frame must be UTF-8 (RFC 6455 §5.6: close 1007).
	if !utf8.Valid(data) {
		return Frame{}, errInvalid("text frame is not valid UTF-8")
	}
	var m message
	var ok bool
	if v == V1 {
		ok = scanObject(data, &m)
	} else {
		ok = scanArray(data, &m)
	}
	if !ok {
		return Frame{}, errInvalid("malformed message")
	}
	// Without a ref and a topic a reply cannot be addressed, so the only
	// remaining answer is closing the connection (docs/configuration.md, errors a client can see). Any JSON value is
	// a ref, as in Phoenix.
	if m.f[fRef].kind == kAbsent {
		return Frame{}, errInvalid("ref missing")
	}
	if m.f[fTopic].kind != kString {
		return Frame{}, errInvalid("topic missing or not a string")
	}
	s, raw, bad := materialize(data, &m.f)
	fr := Frame{
		JoinRef: toRef(m.f[fJoinRef].kind, s[fJoinRef], raw[fJoinRef]),
		Ref:     toRef(m.f[fRef].kind, s[fRef], raw[fRef]),
		Topic:   s[fTopic],
		Event:   s[fEvent],
		Payload: m.payload,
	}
	if m.f[fJoinRef].kind == kAbsent && v == V1 && fr.Event == EventJoin {
		// Pre-join_ref v1 clients: a join's ref is its join_ref, as in
		// Phoenix. Their later pushes and leaves keep a null join_ref,
		// which matches any instance; copying their own ref there would
		// make every one of them look stale.
		fr.JoinRef = fr.Ref
	}
	switch bad {
	case fTopic:
		t := &m.f[fTopic]
		return Frame{}, &BadRequestError{JoinRef: fr.JoinRef, Ref: fr.Ref, Field: FieldTopic,
			TopicJSON: string(data[t.start-1 : t.end+1]), Event: fr.Event, Reason: "topic has a lone surrogate escape"}
	case fEvent:
		return Frame{}, &BadRequestError{JoinRef: fr.JoinRef, Ref: fr.Ref, Topic: fr.Topic, Field: FieldEvent,
			Reason: "event has a lone surrogate escape"}
	}
	var reason string
	switch {
	case m.f[fEvent].kind != kString:
		reason = "event missing or not a string"
	case !m.hasPayload:
		reason = "payload missing"
	default:
		return fr, nil
	}
	return Frame{}, &BadRequestError{JoinRef: fr.JoinRef, Ref: fr.Ref, Topic: fr.Topic, Reason: reason}
}

func toRef(kind uint8, s string, raw bool) Ref {
	switch {
	case kind == kAbsent || kind == kNull:
		return Null
	case raw:
		return RawRef(s)
	}
	return R(s)
}

// scanElem scans one element that should be a string or null, recording
// where it is; any other valid JSON value is recorded as kOther with its
// bounds (a ref may be any value; for a topic or an event the shape check
// reports it).
func scanElem(data []byte, i int, f *field) (int, bool) {
	if i < len(data) && data[i] == '"' {
		end, esc, ok := scanString(data, i)
		*f = field{kind: kString, esc: esc, start: i + 1, end: end - 1}
		return end, ok
	}
	end, ok := skipValue(data, i, 1)
	if ok && data[i] == 'n' {
		f.kind = kNull
	} else {
		*f = field{kind: kOther, start: i, end: end}
	}
	return end, ok
}

// scanArray scans a v2 message. Elements past the fifth are validated and
// ignored, as Phoenix's decoder ignores them.
func scanArray(data []byte, m *message) bool {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '[' {
		return false
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == ']' {
		i++
	} else {
		for n := 0; ; n++ {
			var ok bool
			switch {
			case n < nFields:
				i, ok = scanElem(data, i, &m.f[n])
			case n == nFields:
				start := i
				if i, ok = skipValue(data, i, 1); ok {
					m.payload, m.hasPayload = data[start:i], true
				}
			default:
				i, ok = skipValue(data, i, 1)
			}
			if !ok {
				return false
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return false
			}
			if data[i] == ']' {
				i++
				break
			}
			if data[i] != ',' {
				return false
			}
			i = skipWS(data, i+1)
		}
	}
	return skipWS(data, i) == len(data)
}

// scanObject scans a v1 message. Unknown keys are validated and ignored;
// for a repeated key the last one wins, as with most JSON decoders.
func scanObject(data []byte, m *message) bool {
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return skipWS(data, i+1) == len(data)
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return false
		}
		kEnd, kEsc, ok := scanString(data, i)
		if !ok {
			return false
		}
		key := v1Key(data[i+1:kEnd-1], kEsc)
		i = skipWS(data, kEnd)
		if i >= len(data) || data[i] != ':' {
			return false
		}
		i = skipWS(data, i+1)
		switch key {
		case fJoinRef, fRef, fTopic, fEvent:
			i, ok = scanElem(data, i, &m.f[key])
		case keyPayload:
			start := i
			if i, ok = skipValue(data, i, 1); ok {
				m.payload, m.hasPayload = data[start:i], true
			}
		default:
			i, ok = skipValue(data, i, 1)
		}
		if !ok {
			return false
		}
		i = skipWS(data, i)
		if i >= len(data) {
			return false
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return skipWS(data, i+1) == len(data)
		default:
			return false
		}
	}
}

const (
	keyPayload = nFields
	keyOther   = nFields + 1
)

// v1Key maps a raw object key (without quotes) to a field index. Escaped keys
// such as "\u0074opic" are rare but legal JSON, so they are unescaped
// rather than treated as unknown.
func v1Key(raw []byte, esc bool) int {
	k := string(raw) // no allocation: only used in the comparisons below
	if esc {
		var ok bool
		if k, ok = unescape(raw); !ok {
			return keyOther
		}
	}
	switch k {
	case "join_ref":
		return fJoinRef
	case "ref":
		return fRef
	case "topic":
		return fTopic
	case "event":
		return fEvent
	case "payload":
		return keyPayload
	}
	return keyOther
}

// unescape decodes string content (without quotes) that contains escapes.
// This is the rare path, so it leans on encoding/json for the \u and
// surrogate-pair rules instead of duplicating them. It refuses a lone
// surrogate escape, which encoding/json would turn into U+FFFD: a name
// decoded that way is no longer the one the client holds, and two
// different inputs would become one name.
func unescape(raw []byte) (string, bool) {
	if !pairedSurrogates(raw) {
		return "", false
	}
	q := make([]byte, 0, len(raw)+2)
	q = append(q, '"')
	q = append(q, raw...)
	q = append(q, '"')
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", false
	}
	return s, true
}

// pairedSurrogates reports whether every UTF-16 surrogate escape in the
// string content raw (already validated by scanString) is half of a
// high-low pair.
func pairedSurrogates(raw []byte) bool {
	high := false // the previous escape was a high surrogate
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			if high {
				return false
			}
			continue
		}
		i++
		if raw[i] != 'u' {
			if high {
				return false
			}
			continue
		}
		r := hexRune(raw[i+1 : i+5])
		i += 4
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if high {
				return false
			}
			high = true
		case r >= 0xDC00 && r < 0xE000:
			if !high {
				return false
			}
			high = false
		default:
			if high {
				return false
			}
		}
	}
	return !high
}

func hexRune(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c <= '9':
			r |= rune(c - '0')
		case c >= 'a':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}

// intern returns a constant for the names nearly every message carries, so
// that a heartbeat allocates only its ref.
func intern(b []byte) (string, bool) {
	switch string(b) { // the compiler does not allocate for this conversion
	case TopicPhoenix:
		return TopicPhoenix, true
	case EventHeartbeat:
		return EventHeartbeat, true
	case EventJoin:
		return EventJoin, true
	case EventLeave:
		return EventLeave, true
	}
	return "", false
}

// materialize turns the fields into Go strings that do not alias data (the
// read buffer is reused). A ref that is not a plain string (a number, an
// object, a string with escapes) is kept as its JSON text, flagged in raw,
// so the reply can echo it byte for byte. Fields without escapes that are
// not interned are copied with a single allocation of the span that covers
// them and then sliced; in a v2 message they are adjacent, separated only
// by `","`. When the span holds much more than the strings (a v1 payload
// between keys, or padding whitespace) they are copied one by one instead,
// so a small ref never pins a large chunk of the message. bad is the index
// of a topic or event whose escapes cannot be decoded, or -1.
func materialize(data []byte, fs *[nFields]field) (out [nFields]string, raw [nFields]bool, bad int) {
	bad = -1
	var lo, hi [nFields]int // bounds of what to copy, per field
	var pending [nFields]bool
	spanLo, spanHi, total, n := len(data), 0, 0, 0
	for i := range fs {
		f := &fs[i]
		lo[i], hi[i] = f.start, f.end
		switch {
		case f.kind == kOther && i <= fRef:
			raw[i] = true
		case f.kind != kString || f.start == f.end:
			continue
		case i <= fRef && (f.esc || bytes.IndexByte(data[f.start:f.end], 0xE2) >= 0):
			// Kept with its quotes: escapes, and U+2028/U+2029 (which
			// the encoder would escape), echo exactly as sent.
			raw[i] = true
			lo[i], hi[i] = f.start-1, f.end+1
		case f.esc:
			var ok bool
			if out[i], ok = unescape(data[f.start:f.end]); !ok {
				bad = i
			}
			continue
		default:
			if s, hit := intern(data[f.start:f.end]); hit {
				out[i] = s
				continue
			}
		}
		pending[i] = true
		spanLo, spanHi = min(spanLo, lo[i]), max(spanHi, hi[i])
		total += hi[i] - lo[i]
		n++
	}
	if n > 1 && spanHi-spanLo <= 2*total+16 {
		span := string(data[spanLo:spanHi])
		for i, p := range pending {
			if p {
				out[i] = span[lo[i]-spanLo : hi[i]-spanLo]
			}
		}
	} else {
		for i, p := range pending {
			if p {
				out[i] = string(data[lo[i]:hi[i]])
			}
		}
	}
	return out, raw, bad
}

// decodeBinary decodes a v2 binary client push (kind 0, 5-byte header).
// Clients never send kinds 1 and 2, so those are malformed. An empty join_ref
// or ref decodes as "" rather than null, as in Phoenix: the binary layout has
// no way to say null.
func decodeBinary(data []byte) (Frame, error) {
	const header = 5
	if len(data) < header {
		return Frame{}, errInvalid("binary frame shorter than its header")
	}
	if data[0] != 0 {
		return Frame{}, errInvalid("binary frame kind is not push (0)")
	}
	j, r, t, e := int(data[1]), int(data[2]), int(data[3]), int(data[4])
	end := header + j + r + t + e
	if end > len(data) {
		return Frame{}, errInvalid("binary frame field lengths past the end")
	}
	meta := data[header:end]
	// Checked per field: a rune split across two fields would pass a check
	// of the whole run but leave both strings invalid.
	if !utf8.Valid(meta[:j]) || !utf8.Valid(meta[j:j+r]) ||
		!utf8.Valid(meta[j+r:j+r+t]) || !utf8.Valid(meta[j+r+t:]) {
		return Frame{}, errInvalid("binary frame field is not valid UTF-8")
	}
	s := string(meta) // one allocation for all four strings
	return Frame{
		JoinRef: R(s[:j]),
		Ref:     R(s[j : j+r]),
		Topic:   s[j+r : j+r+t],
		Event:   s[j+r+t:],
		Payload: data[end:],
		Binary:  true,
	}, nil
}
