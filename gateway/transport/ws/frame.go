package ws

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// Opcodes, RFC 6455 §5.2.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// header is a parsed client frame header.
type header struct {
	fin    bool
	rsv1   bool // compressed message (permessage-deflate)
	op     byte
	masked bool
	mask   [4]byte
	length int64
	size   int // bytes the header occupies
}

// protocolError carries the close code a malformed frame earns.
type protocolError struct {
	code   transport.CloseCode
	reason string
}

func (e *protocolError) Error() string { return e.reason }

var (
	errRSV          = &protocolError{transport.CloseProtocolError, "reserved bits set"}
	errOpcode       = &protocolError{transport.CloseProtocolError, "reserved opcode"}
	errUnmasked     = &protocolError{transport.CloseProtocolError, "client frame not masked"}
	errControl      = &protocolError{transport.CloseProtocolError, "invalid control frame"}
	errContinuation = &protocolError{transport.CloseProtocolError, "unexpected continuation frame"}
	errInterleaved  = &protocolError{transport.CloseProtocolError, "new message before the previous one ended"}
	errLength       = &protocolError{transport.CloseProtocolError, "invalid payload length"}
	errCloseCode    = &protocolError{transport.CloseProtocolError, "invalid close code"}
	errCloseUTF8    = &protocolError{transport.CloseInvalidPayload, "close reason is not UTF-8"}
	errTextUTF8     = &protocolError{transport.CloseInvalidPayload, "text message is not UTF-8"}
	errTooBig       = &protocolError{transport.CloseMessageTooBig, "message too big"}
)

// parseHeader parses a client frame header from b. It returns ok=false when
// b does not yet hold the whole header. It checks everything that can be
// checked from the header alone, before any payload is buffered, so a client
// can never make us buffer more than the configured cap. deflate allows
// RSV1 on the first frame of a data message (RFC 7692 §6).
func parseHeader(b []byte, maxSize int, deflate bool) (h header, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	b0, b1 := b[0], b[1]
	h.fin = b0&0x80 != 0
	if b0&0x30 != 0 || (b0&rsv1 != 0 && !deflate) {
		return h, false, errRSV
	}
	h.op = b0 & 0x0F
	switch h.op {
	case opContinuation, opText, opBinary, opClose, opPing, opPong:
	default:
		return h, false, errOpcode
	}
	if h.rsv1 = b0&rsv1 != 0; h.rsv1 && h.op != opText && h.op != opBinary {
		return h, false, errRSV1
	}
	h.masked = b1&0x80 != 0
	if !h.masked {
		return h, false, errUnmasked
	}
	l := int64(b1 & 0x7F)
	n := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return h, false, nil
		}
		l = int64(binary.BigEndian.Uint16(b[2:4]))
		if l < 126 {
			return h, false, errLength // non-minimal length encoding
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return h, false, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 || u < 1<<16 {
			return h, false, errLength
		}
		l = int64(u)
		n = 10
	}
	if h.op >= opClose && (!h.fin || l > 125) {
		return h, false, errControl
	}
	if l > int64(maxSize) {
		return h, false, errTooBig
	}
	if len(b) < n+4 {
		return h, false, nil
	}
	copy(h.mask[:], b[n:n+4])
	h.length = l
	h.size = n + 4
	return h, true, nil
}

// appendFrameHeader appends an unmasked server frame header.
func appendFrameHeader(dst []byte, op byte, length int) []byte {
	b0 := 0x80 | op
	switch {
	case length < 126:
		return append(dst, b0, byte(length))
	case length <= 0xFFFF:
		return append(dst, b0, 126, byte(length>>8), byte(length))
	default:
		dst = append(dst, b0, 127)
		return binary.BigEndian.AppendUint64(dst, uint64(length))
	}
}

// buildFrame is the transport.Message.Wire builder: one allocation per
// message, shared by every recipient. A message with a Tail is sent as two
// frames of one fragmented message (RFC 6455 §5.4): its Data as a first
// fragment, then the Tail as a continuation frame that buildTail frames
// once for every message sharing it.
func buildFrame(m *transport.Message) []byte {
	op := byte(opText)
	if m.Binary {
		op = opBinary
	}
	b := make([]byte, 0, 10+len(m.Data))
	if m.Tail != nil {
		b = appendFragmentHeader(b, op, len(m.Data))
	} else {
		b = appendFrameHeader(b, op, len(m.Data))
	}
	return append(b, m.Data...)
}

// buildTail frames a shared Tail: the final continuation frame.
func buildTail(m *transport.Message) []byte {
	b := make([]byte, 0, 10+len(m.Data))
	b = appendFrameHeader(b, opContinuation, len(m.Data))
	return append(b, m.Data...)
}

// appendFragmentHeader appends the header of a first fragment (FIN clear).
func appendFragmentHeader(dst []byte, op byte, length int) []byte {
	n := len(dst)
	dst = appendFrameHeader(dst, op, length)
	dst[n] &^= 0x80
	return dst
}

// closeFrame builds a close frame; the reason is truncated to fit the
// 125-byte control payload limit, on a rune boundary.
func closeFrame(code transport.CloseCode, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 0, 4+len(reason))
	b = appendFrameHeader(b, opClose, 2+len(reason))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

// validCloseCode reports whether a peer may send code (RFC 6455 §7.4).
func validCloseCode(code uint16) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

var pingFrame = appendFrameHeader(nil, opPing, 0)
