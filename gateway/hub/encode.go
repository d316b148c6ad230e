package hub

import (
	"strconv"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Encoding: a message's Phoenix frames, built once per protocol variant and
// shared by every member (and every replay) of that variant.

// encoder caches the encodings of one message, built lazily at most once
// per protocol variant; the same *transport.Message (so the same framed
// bytes) goes to every member of that variant. Used under ch.mu.
type encoder struct {
	v1, v2, v2t         [2]*transport.Message
	done1, done2, done3 bool
}

// EventOffset is the text frame that follows a binary broadcast in a
// persistent namespace, [null, "<offset>", topic, "fabric:offset",
// {"offset": "<offset>"}]: a binary frame has no ref slot.
const EventOffset = "fabric:offset"

// offsetPayload is fabric:offset's payload, {"offset":"<offset>"}.
func offsetPayload(offset string) []byte {
	b := make([]byte, 0, len(offset)+14)
	b = append(b, `{"offset":"`...)
	b = append(b, offset...)
	return append(b, `"}`...)
}

// ref is the frame's ref slot: the stream offset in a persistent namespace
// (phoenix.js hands it to channel.on handlers as the second argument).
func ref(m *broker.Message) phoenix.Ref {
	if m.Offset == 0 {
		return phoenix.Null
	}
	return phoenix.R(strconv.FormatUint(m.Offset, 10))
}

// classed sets m's compression class, once, before m is shared.
func (h *Hub) classed(m *transport.Message, topic string) *transport.Message {
	if h.cfg.Compression != nil {
		m.Compression = h.cfg.Compression(topic)
	}
	return m
}

func (e *encoder) frames(h *Hub, m *broker.Message, v phoenix.Version, textOnly bool) []*transport.Message {
	if textOnly && v == phoenix.V2 && m.Binary {
		if !e.done3 {
			e.done3 = true
			e.v2t[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, ref(m), m.Topic, m.Event, phoenix.AppendBase64Payload(nil, m.Payload))), m.Topic)
		}
		return e.v2t[:]
	}
	if v == phoenix.V1 {
		if !e.done1 {
			e.done1 = true
			payload := m.Payload
			if m.Binary {
				// v1 has no binary frames: the payload travels as base64.
				payload = phoenix.AppendBase64Payload(nil, m.Payload)
			}
			e.v1[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V1, phoenix.Null, ref(m), m.Topic, m.Event, payload)), m.Topic)
		}
		return e.v1[:]
	}
	if !e.done2 {
		e.done2 = true
		if !m.Binary {
			e.v2[0] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, ref(m), m.Topic, m.Event, m.Payload)), m.Topic)
		} else if b, err := phoenix.AppendBinaryBroadcast(nil, m.Topic, m.Event, m.Payload); err != nil {
			h.encodeErrors.Add(1)
			h.cfg.Logger.Warn("hub: cannot frame binary message", "topic", m.Topic, "err", err)
		} else {
			e.v2[0] = h.classed(transport.NewBinary(b), m.Topic)
			if m.Offset != 0 {
				// A binary broadcast has no ref slot; its offset follows
				// in a text frame the JS helper consumes. The payload is
				// an object, never null: phoenix.js with a logger reads
				// payload.status of every message.
				r := ref(m)
				e.v2[1] = h.classed(transport.NewText(phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, r, m.Topic, EventOffset, offsetPayload(r.S))), m.Topic)
			}
		}
	}
	return e.v2[:]
}
