// Package phoenix is the Phoenix Channels wire codec: it decodes client
// messages and encodes server messages in the formats the unmodified
// phoenix.js client speaks — v1 JSON objects, v2 JSON arrays
// ([join_ref, ref, topic, event, payload]) and v2 binary frames (kinds 0, 1
// and 2 with 1-byte length headers).
//
// The package is pure: it does no I/O, keeps no state and starts no
// goroutines, so every function is safe for concurrent use. It knows nothing
// about channels, sessions or transports; the session layer decides what to
// do with a decoded [Frame] and which close code to send for a
// [*ProtocolError].
//
// Decoding runs for every client message (heartbeats from every connection),
// so the outer array/object is read by a hand-written scanner that validates
// the whole message as JSON in one pass and allocates only the strings it
// returns. Encoders are append-style so callers can reuse buffers.
//
// The wire formats are specified in the shared design docs,
// docs/protocol.md and the serializer of phoenix.js 1.8; the error handling
// is the table "Errors a client can see" in docs/configuration.md.
package phoenix
