package phx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The Phoenix v2 serializer: a text frame is the JSON array
// [join_ref, ref, topic, event, payload]; a binary frame starts with a kind
// byte (0 push, 1 reply, 2 broadcast) and one length byte per string field,
// then the fields, then the raw payload (docs/clients-go.md has the layouts).

const (
	kindPush      = 0
	kindReply     = 1
	kindBroadcast = 2

	// maxField is the longest string a binary frame can carry: each length
	// is one byte.
	maxField = 255
)

// frame is one decoded server message.
type frame struct {
	joinRef, ref string // "" for null
	topic, event string
	payload      json.RawMessage // text frames
	binary       []byte          // binary frames: the payload (or a reply's response)
	isBinary     bool
	status       string // binary replies only
}

// appendText encodes [join_ref, ref, topic, event, payload]. Empty refs
// are written as null; payload must be valid JSON (nil means {}).
func appendText(dst []byte, joinRef, ref, topic, event string, payload []byte) []byte {
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	dst = append(dst, ',')
	dst = appendRef(dst, ref)
	dst = append(dst, ',')
	dst = appendString(dst, topic)
	dst = append(dst, ',')
	dst = appendString(dst, event)
	dst = append(dst, ',')
	if len(payload) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, payload...)
	}
	return append(dst, ']')
}

// errFieldTooLong: a binary frame's length bytes cap each string field.
var errFieldTooLong = errors.New("phx: join_ref, ref, topic and event must each be at most 255 bytes in a binary push")

// appendBinaryPush encodes a client push with a binary payload (kind 0,
// 5-byte header: kind and the lengths of join_ref, ref, topic, event).
func appendBinaryPush(dst []byte, joinRef, ref, topic, event string, payload []byte) ([]byte, error) {
	if len(joinRef) > maxField || len(ref) > maxField || len(topic) > maxField || len(event) > maxField {
		return dst, errFieldTooLong
	}
	dst = append(dst, kindPush, byte(len(joinRef)), byte(len(ref)), byte(len(topic)), byte(len(event)))
	dst = append(dst, joinRef...)
	dst = append(dst, ref...)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	return append(dst, payload...), nil
}

func appendRef(dst []byte, ref string) []byte {
	if ref == "" {
		return append(dst, "null"...)
	}
	return appendString(dst, ref)
}

// appendString writes s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does; HTML characters are left alone (no need here).
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodeText decodes a v2 text frame. Refs may be strings, numbers or null
// (a server echoes whatever JSON value the client sent); a number is kept
// as its decimal text.
func decodeText(p []byte) (frame, error) {
	var f frame
	var a []json.RawMessage
	if err := json.Unmarshal(p, &a); err != nil {
		return f, fmt.Errorf("phx: text frame is not a JSON array: %w", err)
	}
	if len(a) < 5 {
		return f, fmt.Errorf("phx: text frame has %d elements, want 5", len(a))
	}
	var err error
	if f.joinRef, err = decodeRef(a[0]); err != nil {
		return f, err
	}
	if f.ref, err = decodeRef(a[1]); err != nil {
		return f, err
	}
	if err := json.Unmarshal(a[2], &f.topic); err != nil {
		return f, fmt.Errorf("phx: topic: %w", err)
	}
	if err := json.Unmarshal(a[3], &f.event); err != nil {
		return f, fmt.Errorf("phx: event: %w", err)
	}
	f.payload = a[4]
	return f, nil
}

func decodeRef(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("phx: ref: %w", err)
		}
		return s, nil
	default:
		// Any other JSON value (a number, in practice): its text, which is
		// what the client compares against the refs it sent.
		return string(raw), nil
	}
}

var errShortBinary = errors.New("phx: binary frame truncated")

// decodeBinary decodes a server binary frame: push (kind 0, 4-byte header,
// no ref), reply (kind 1, 5-byte header with status) or broadcast (kind 2,
// 3-byte header). The returned slices alias p.
func decodeBinary(p []byte) (frame, error) {
	f := frame{isBinary: true}
	if len(p) < 1 {
		return f, errShortBinary
	}
	var hdr int
	switch p[0] {
	case kindPush:
		hdr = 4
	case kindReply:
		hdr = 5
	case kindBroadcast:
		hdr = 3
	default:
		return f, fmt.Errorf("phx: binary frame of unknown kind %d", p[0])
	}
	if len(p) < hdr {
		return f, errShortBinary
	}
	off := hdr
	field := func(i int) (string, bool) {
		n := int(p[i])
		if off+n > len(p) {
			return "", false
		}
		s := string(p[off : off+n])
		off += n
		return s, true
	}
	ok := true
	var s string
	switch p[0] {
	case kindPush:
		if f.joinRef, ok = field(1); ok {
			if f.topic, ok = field(2); ok {
				f.event, ok = field(3)
			}
		}
	case kindReply:
		f.event = eventReply
		if f.joinRef, ok = field(1); ok {
			if f.ref, ok = field(2); ok {
				if f.topic, ok = field(3); ok {
					s, ok = field(4)
					f.status = s
				}
			}
		}
	case kindBroadcast:
		if f.topic, ok = field(1); ok {
			f.event, ok = field(2)
		}
	}
	if !ok {
		return f, errShortBinary
	}
	f.binary = p[off:]
	return f, nil
}
