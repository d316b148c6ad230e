package ws

import "github.com/fabric-rt/fabric/gateway/transport"

// DeflatedFrame is m's compressed frame as the server builds it, whether
// or not it is smaller than the plain one (benchmarks).
func DeflatedFrame(m *transport.Message) []byte {
	b, _ := deflateFrame(0x80|rsv1|dataOp(m), m.Data, false)
	return b
}

// WireLen is the bytes m takes on the wire, compressed or not, as Send
// frames it (messages without a Tail).
func WireLen(m *transport.Message, deflated bool) int {
	if deflated {
		if b, ok := deflateFrame(0x80|rsv1|dataOp(m), m.Data, true); ok {
			return len(b)
		}
	}
	return len(buildFrame(m))
}

// Frame is m's plain frame as Send queues it (messages without a Tail).
func Frame(m *transport.Message) []byte { return m.Wire(buildFrame) }
