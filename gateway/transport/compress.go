package transport

import "sync/atomic"

// Compression is a class of messages sharing one compression policy and
// one pair of counters: in Fabric, a namespace. Transports that compress
// (WebSocket permessage-deflate) consult Off before compressing a message
// and count what they compressed, once per message, not per delivery: the
// compressed encoding is built once and shared like the plain one.
type Compression struct {
	// Name labels the counters (the namespace).
	Name string
	// Off sends the class's messages uncompressed, e.g. a namespace whose
	// payloads are already compressed.
	Off bool

	before, after atomic.Uint64
}

// Count records one compressed message: its size before and after.
func (c *Compression) Count(before, after int) {
	c.before.Add(uint64(before))
	c.after.Add(uint64(after))
}

// Bytes is what Count recorded: bytes before and after compression.
func (c *Compression) Bytes() (before, after uint64) {
	return c.before.Load(), c.after.Load()
}
