package phoenix

import (
	"encoding/base64"
	"unicode/utf8"
)

// emptyObject stands in for a nil payload: phoenix.js reads fields of the
// payload unconditionally, so it must be an object, never absent or null.
const emptyObject = "{}"

// AppendMessage encodes a text message [join_ref, ref, topic, event, payload]
// (v2) or {"topic":..,"event":..,"payload":..,"ref":..} (v1 — v1 never writes
// join_ref, as Phoenix's V1 serializer). payload is raw JSON and is not
// validated; nil or empty means {}. Any Version other than V1 encodes v2.
func AppendMessage(dst []byte, v Version, joinRef, ref Ref, topic, event string, payload []byte) []byte {
	if v == V1 {
		dst = append(dst, `{"topic":`...)
		dst = appendString(dst, topic)
		dst = append(dst, `,"event":`...)
		dst = appendString(dst, event)
		dst = append(dst, `,"payload":`...)
		dst = appendRaw(dst, payload)
		dst = append(dst, `,"ref":`...)
		dst = appendRef(dst, ref)
		return append(dst, '}')
	}
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	dst = append(dst, ',')
	dst = appendRef(dst, ref)
	dst = append(dst, ',')
	dst = appendString(dst, topic)
	dst = append(dst, ',')
	dst = appendString(dst, event)
	dst = append(dst, ',')
	dst = appendRaw(dst, payload)
	return append(dst, ']')
}

// AppendReply encodes a phx_reply with payload
// {"status":status,"response":response}; response is raw JSON, nil or
// empty means {}. It writes the payload in place rather than building it
// separately so a reply costs no allocation.
func AppendReply(dst []byte, v Version, joinRef, ref Ref, topic, status string, response []byte) []byte {
	return appendReply(dst, v, joinRef, ref, topic, false, status, response)
}

// AppendReplyJSONTopic is AppendReply for a topic that could not be decoded
// (BadRequestError.TopicJSON): topicJSON, the topic's JSON text as the
// client sent it, is written as is, so that the client, which matches a
// reply on topic and ref, still gets it.
func AppendReplyJSONTopic(dst []byte, v Version, joinRef, ref Ref, topicJSON, status string, response []byte) []byte {
	return appendReply(dst, v, joinRef, ref, topicJSON, true, status, response)
}

func appendReply(dst []byte, v Version, joinRef, ref Ref, topic string, topicJSON bool, status string, response []byte) []byte {
	appendTopic := appendString
	if topicJSON {
		appendTopic = func(dst []byte, s string) []byte { return append(dst, s...) }
	}
	if v == V1 {
		dst = append(dst, `{"topic":`...)
		dst = appendTopic(dst, topic)
		dst = append(dst, `,"event":"phx_reply","payload":`...)
		dst = appendReplyPayload(dst, status, response)
		dst = append(dst, `,"ref":`...)
		dst = appendRef(dst, ref)
		return append(dst, '}')
	}
	dst = append(dst, '[')
	dst = appendRef(dst, joinRef)
	dst = append(dst, ',')
	dst = appendRef(dst, ref)
	dst = append(dst, ',')
	dst = appendTopic(dst, topic)
	dst = append(dst, `,"phx_reply",`...)
	dst = appendReplyPayload(dst, status, response)
	return append(dst, ']')
}

func appendReplyPayload(dst []byte, status string, response []byte) []byte {
	dst = append(dst, `{"status":`...)
	dst = appendString(dst, status)
	dst = append(dst, `,"response":`...)
	dst = appendRaw(dst, response)
	return append(dst, '}')
}

// AppendBase64Payload writes {"base64":"<std base64 of b>"}: v1 and LongPoll
// clients cannot receive binary frames, so binary payloads reach them this way.
func AppendBase64Payload(dst, b []byte) []byte {
	dst = append(dst, `{"base64":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, `"}`...)
}

// AppendBinaryPush encodes a server→client binary push (kind 0, 4-byte
// header, no ref). A null joinRef is written as "", as Phoenix does.
func AppendBinaryPush(dst []byte, joinRef Ref, topic, event string, payload []byte) ([]byte, error) {
	jr := refBytes(joinRef)
	if len(jr) > 255 || len(topic) > 255 || len(event) > 255 {
		return dst, ErrFieldTooLong
	}
	dst = append(dst, 0, byte(len(jr)), byte(len(topic)), byte(len(event)))
	dst = append(dst, jr...)
	dst = append(dst, topic...)
	dst = append(dst, event...)
	return append(dst, payload...), nil
}

// AppendBinaryReply encodes a server→client binary reply (kind 1, 5-byte
// header); the client turns it into phx_reply {status, response: bytes}.
func AppendBinaryReply(dst []byte, joinRef, ref Ref, topic, status string, payload []byte) ([]byte, error) {
	jr, r := refBytes(joinRef), refBytes(ref)
	if len(jr) > 255 || len(r) > 255 || len(topic) > 255 || len(status) > 255 {
		return dst, ErrFieldTooLong
	}
	dst = append(dst, 1, byte(len(jr)), byte(len(r)), byte(len(topic)), byte(len(status)))
	dst = append(dst, jr...)
	dst = append(dst, r...)
	dst = append(dst, topic...)
	dst = append(dst, status...)
	return append(dst, payload...), nil
}

// AppendBinaryBroadcast encodes a server→client binary broadcast (kind 2,
// 3-byte header); the client decodes it with null join_ref and ref.
func AppendBinaryBroadcast(dst []byte, topic, event string, payload []byte) ([]byte, error) {
	if len(topic) > 255 || len(event) > 255 {
		return dst, ErrFieldTooLong
	}
	dst = append(dst, 2, byte(len(topic)), byte(len(event)))
	dst = append(dst, topic...)
	dst = append(dst, event...)
	return append(dst, payload...), nil
}

func refBytes(r Ref) string { return r.Text() }

func appendRef(dst []byte, r Ref) []byte {
	switch {
	case !r.Valid:
		return append(dst, "null"...)
	case r.Raw:
		return append(dst, r.S...)
	}
	return appendString(dst, r.S)
}

func appendRaw(dst, raw []byte) []byte {
	if len(raw) == 0 {
		return append(dst, emptyObject...)
	}
	return append(dst, raw...)
}

const hexDigits = "0123456789abcdef"

// appendString writes s as a JSON string. It follows encoding/json without
// HTML escaping: short escapes where they exist, \u00XX for other controls,
// U+FFFD for invalid UTF-8 (JSON text must be UTF-8, and the client's
// TextDecoder would do the same), and \u2028/\u2029 escaped because older
// JavaScript engines reject them raw in some contexts.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if plain[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
