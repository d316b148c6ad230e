// Package publisher sends messages to Fabric channels: a Go library for
// services, the HTTP endpoint POST /api/v1/publish (and /batch), and the
// glue `fabric publish` uses.
//
// A message published to topic "room:lobby" as event "new_msg" reaches
// every client that joined the channel, as channel.on("new_msg", …). The
// library maps topics to NATS subjects exactly as the gateway does
// (nats/subject: room:lobby → fabric.room.lobby) and puts the event in the
// Fabric-Event header, so it is the same as `nats pub` with the right
// subject and header, plus the parts that are easy to get wrong:
//
//   - Persistent namespaces (a JetStream stream captures the subject; the
//     server is asked once per namespace, so the library needs none of
//     Fabric's configuration) are published with JetStream and a message
//     id. Publish returns only once the stream stored the message, with its
//     offset (stream sequence) and epoch (the stream's incarnation), the
//     position clients see.
//   - WithIdempotencyKey makes retries safe: the same key within the
//     stream's two-minute duplicate window is stored once and answered with
//     the first offset and Duplicate set. Without a key a unique id is
//     generated, so nats.go's own retries cannot store a message twice.
//   - Ephemeral namespaces are published with core NATS and a flush: the
//     server took the message; offset 0, no epoch.
//   - Event names the gateway would drop (reserved "phx_…" and "fabric:…",
//     control characters, over 255 bytes) and topics it would refuse are
//     errors here rather than silent losses there. presence_state,
//     presence_diff and chan_reply_… are refused from clients but allowed
//     here: the publisher is the authorized path for a service that sends
//     them on purpose (docs/protocol.md).
//   - Never a success without an acknowledgement: a disconnected
//     connection, a stream that does not answer within Config.Timeout or a
//     persistent namespace whose stream vanished all fail with
//     ErrUnavailable.
//
// Usage:
//
//	p, err := publisher.New(nc, publisher.Config{})
//	res, err := p.Publish(ctx, "room:lobby", "new_msg", []byte(`{"body":"hi"}`),
//		publisher.WithIdempotencyKey(orderID))
//	// res.Epoch, res.Offset, res.Duplicate
//
// Payloads are forwarded untouched: a JSON value goes to clients in a text
// frame, anything else in a binary frame; WithContentType("application/
// octet-stream") forces binary.
//
// The HTTP endpoint (NewHandler) speaks fabric.v1.PublishRequest from
// schema/proto, as protobuf or in its JSON mapping (payload in base64):
//
//	curl -H 'Authorization: Bearer KEY' -H 'Content-Type: application/json' \
//	  -d '{"topic":"room:lobby","event":"new_msg","payload":"eyJib2R5IjoiaGkifQ=="}' \
//	  http://127.0.0.1:4000/api/v1/publish
//	{"epoch":"…","offset":"42","duplicate":false}
//
// and answers 200 only for an acknowledged message; see Handler for the
// status codes.
//
// A service that reaches a gateway but not NATS publishes through that
// endpoint with HTTPClient (as `fabric publish --api-url` does): the same
// options and Result, the gateway's refusals as *HTTPError.
package publisher
