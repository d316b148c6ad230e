package ws

// permessage-deflate (RFC 7692), shaped by one choice: the server never
// keeps compression context between messages (server_no_context_takeover),
// so a message's compressed frame is the same bytes for every recipient
// and is built once, cached on the transport.Message next to its plain
// frame, exactly as the plain frame is. No connection holds a compressor;
// the cost is per message, not per delivery.
//
// Inbound, the response asks for client_no_context_takeover (RFC 7692
// §7.1.1.2), so each compressed message inflates on its own with a fresh
// inflater: one per loop, reset per message, never one per connection.
// The message cap applies to inflated bytes while inflating, and a loop
// inflates a bounded number of bytes per read turn.

import (
	"bytes"
	"errors"
	"io"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"

	"github.com/fabric-rt/fabric/gateway/transport"
)

const (
	// rsv1 is the per-message-compressed bit of a frame's first byte.
	rsv1 = 0x40
	// inflateBudget bounds the bytes one loop inflates for one connection
	// per read turn (one readable event), so a peer sending many small
	// messages that each inflate to the cap cannot keep the loop busy:
	// over it, the rest of what was read waits for a later turn, after
	// every other ready connection.
	inflateBudget = 1 << 20
)

var (
	errInflate = &protocolError{transport.CloseInvalidPayload, "invalid compressed message"}
	errRSV1    = &protocolError{transport.CloseProtocolError, "compression bit on a control or continuation frame"}
)

// negotiate accepts the client's first acceptable permessage-deflate offer
// and answers it with both no_context_takeover parameters. An offer that
// asks us to use a smaller window (server_max_window_bits) is declined
// (the connection is then uncompressed); a malformed one refuses the
// upgrade with 400.
func negotiate(ext *wsflate.Extension) func(httphead.Option) (httphead.Option, error) {
	ext.Parameters = wsflate.Parameters{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	return ext.Negotiate
}

// deflatable reports whether m goes compressed to a connection that
// negotiated compression.
func (s *Server) deflatable(m *transport.Message) bool {
	if c := m.Compression; c != nil && c.Off {
		return false
	}
	return m.Len() >= s.cfg.CompressMin
}

// deflated returns m's compressed frames (the second one for a Tail), or
// nil when m is sent plain because compression would not make it smaller.
func (s *Server) deflated(m *transport.Message) (b, tail []byte) {
	if m.Tail == nil {
		return m.WireDeflated(s.buildDeflated), nil
	}
	// The Tail (shared by every message that carries it) is compressed on
	// its own; the head, compressed per message, ends on a sync flush so
	// the two deflate streams concatenate into one message.
	if tail = m.Tail.WireDeflated(s.buildDeflatedTail); tail == nil {
		return nil, nil
	}
	return m.WireDeflated(s.buildDeflatedHead), tail
}

// frameBuf collects a compressed frame.
type frameBuf struct{ b []byte }

func (f *frameBuf) Write(p []byte) (int, error) {
	f.b = append(f.b, p...)
	return len(p), nil
}

// deflateFrame returns one frame with first byte b0 whose payload is p
// compressed and sync-flushed; last drops the flush's 00 00 ff ff, as the
// end of a message does (RFC 7692 §7.2.1). ok is false when the result is
// not smaller than the plain frame.
//
// The compressor is stateless (klauspost/compress's StatelessDeflate: its
// hash table lives on the stack for the call): no context is carried from
// one message to the next anyway, and a pooled stateful writer spent more
// time resetting its tables than compressing a small message (measured:
// bench/results/compression.txt).
func deflateFrame(b0 byte, p []byte, last bool) (frame []byte, ok bool) {
	const room = 10 // the longest frame header, filled in front afterwards
	w := frameBuf{b: make([]byte, room, room+len(p)/2+64)}
	_ = flate.StatelessDeflate(&w, p, false, nil) // writes to memory: no error
	out := w.b
	if last {
		out = bytes.TrimSuffix(out, []byte{0, 0, 0xff, 0xff})
	}
	n := len(out) - room
	var h [room]byte
	hdr := appendFrameHeader(h[:0], 0, n)
	hdr[0] = b0
	if last && len(hdr)+n >= frameHeaderLen(len(p))+len(p) {
		return nil, false
	}
	start := room - len(hdr)
	copy(out[start:], hdr)
	return out[start:], true
}

func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	}
	return 10
}

// count records a compressed message's sizes on its class.
func (s *Server) count(m *transport.Message, before, after int) {
	c := m.Compression
	if c == nil {
		c = s.cfg.DefaultCompression
	}
	if c != nil {
		c.Count(before, after)
	}
}

func dataOp(m *transport.Message) byte {
	if m.Binary {
		return opBinary
	}
	return opText
}

// buildDeflated is the WireDeflated builder of a message without a Tail.
func (s *Server) buildDeflatedMsg(m *transport.Message) []byte {
	b, ok := deflateFrame(0x80|rsv1|dataOp(m), m.Data, true)
	if !ok {
		return nil
	}
	s.count(m, len(m.Data), len(b))
	return b
}

// buildDeflatedHeadMsg is the first fragment of a message with a Tail:
// compressed even when that does not pay (the Tail's compression did, and
// RSV1 marks the whole message).
func (s *Server) buildDeflatedHeadMsg(m *transport.Message) []byte {
	b, _ := deflateFrame(rsv1|dataOp(m), m.Data, false)
	s.count(m, len(m.Data), len(b))
	return b
}

// buildDeflatedTailMsg is the final continuation frame, shared.
func (s *Server) buildDeflatedTailMsg(m *transport.Message) []byte {
	b, ok := deflateFrame(0x80|opContinuation, m.Data, true)
	if !ok {
		return nil
	}
	s.count(m, len(m.Data), len(b))
	return b
}

// inflater inflates one compressed message at a time for a loop.
type inflater struct {
	r   io.ReadCloser // flate reader, Reset per message
	src flateSource
	out []byte
}

// flateSource is a compressed message followed by the 00 00 ff ff that its
// sender removed (RFC 7692 §7.2.2). It implements io.ByteReader so the
// flate reader reads it directly, with no buffer of its own.
type flateSource struct {
	p    []byte
	tail int // bytes of the 00 00 ff ff already read
}

var flushTail = [4]byte{0, 0, 0xff, 0xff}

func (f *flateSource) ReadByte() (byte, error) {
	if len(f.p) > 0 {
		b := f.p[0]
		f.p = f.p[1:]
		return b, nil
	}
	if f.tail < len(flushTail) {
		f.tail++
		return flushTail[f.tail-1], nil
	}
	return 0, io.EOF
}

func (f *flateSource) Read(b []byte) (int, error) {
	n := copy(b, f.p)
	f.p = f.p[n:]
	if n < len(b) && f.tail < len(flushTail) {
		k := copy(b[n:], flushTail[f.tail:])
		f.tail += k
		n += k
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (f *flateSource) done() bool { return len(f.p) == 0 && f.tail == len(flushTail) }

// inflate returns p inflated, in a buffer valid until the next call. It
// stops with errTooBig as soon as the output passes limit, so at most limit+1
// bytes are ever inflated (and held) for one message.
func (z *inflater) inflate(p []byte, limit int) ([]byte, error) {
	z.src = flateSource{p: p}
	if z.r == nil {
		z.r = flate.NewReader(&z.src)
	} else if err := z.r.(flate.Resetter).Reset(&z.src, nil); err != nil {
		return nil, errInflate
	}
	out := z.out[:0]
	for {
		if len(out) == cap(out) {
			if len(out) > limit {
				return nil, errTooBig
			}
			// Doubling up to a read buffer's size, then straight to the
			// cap: growing a large message by doubling would leave about
			// as much garbage again as the message.
			size := max(2*cap(out), 4<<10)
			if size > readBufferSize {
				size = limit + 1
			}
			out = append(make([]byte, 0, min(size, limit+1)), out...)
		}
		n, err := z.r.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if len(out) > limit {
			z.keep(out)
			return nil, errTooBig
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF) && z.src.done():
			// A final block ends the stream (EOF); otherwise it ends on
			// the sync flush we appended, and the reader then runs out
			// looking for the next block header.
			z.keep(out)
			return out, nil
		default:
			z.keep(out)
			return nil, errInflate
		}
	}
}

// keep holds on to the output buffer for the next message unless a large
// message grew it: a loop keeps at most one read buffer's worth.
func (z *inflater) keep(out []byte) {
	if cap(out) <= readBufferSize {
		z.out = out[:0]
	} else {
		z.out = nil
	}
}
