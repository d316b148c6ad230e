package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/klauspost/compress/flate"
	"golang.org/x/sys/unix"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// fuzzMaxMessage is the message cap while fuzzing: small, so the fuzzer
// reaches "too big" with short inputs, and above 125 so that the 16-bit
// length form can carry a valid frame.
const fuzzMaxMessage = 300

// maxFrameHeader is the longest client frame header: 2 + 8 length + 4 mask.
const maxFrameHeader = 14

// FuzzFrames feeds a byte stream, cut into reads by cuts, through the
// connection's parser (consume → frame → deliver, the code the loop runs on
// every read) and compares what the session and the peer see with a
// one-pass reference decoder of RFC 6455 client frames written from the
// RFC, not from the parser:
//   - the messages delivered (kind and bytes) are exactly the reference's,
//     however the stream is cut;
//   - every ping is answered with a pong carrying its payload, in order;
//   - a malformed stream is closed with the reference's code (1002, 1007,
//     1009), a peer's close frame is echoed, and the session hears exactly
//     one HandleClose with the right code;
//   - the bytes held between reads never exceed one frame header plus the
//     message cap, whatever follows (bounded memory per connection).
func FuzzFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s.stream, s.cuts)
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) { checkFrames(t, stream, cuts, false) })
}

// FuzzDeflateFrames is FuzzFrames on a connection that negotiated
// permessage-deflate: compressed messages, whole or fragmented, inflate
// to what the reference inflates; inflated bytes over the cap close 1009,
// a stream that does not inflate 1007, RSV1 on a control or continuation
// frame 1002; plain messages still work.
func FuzzDeflateFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s.stream, s.cuts)
	}
	for _, s := range deflateSeeds() {
		f.Add(s.stream, s.cuts)
	}
	f.Fuzz(func(t *testing.T, stream, cuts []byte) { checkFrames(t, stream, cuts, true) })
}

func checkFrames(t *testing.T, stream, cuts []byte, deflate bool) {
	{
		if len(stream) > 8<<10 {
			stream = stream[:8<<10]
		}
		want := referenceDecodeWith(stream, fuzzMaxMessage, deflate)
		got := runFramesWith(t, stream, cuts, deflate)

		if len(got.msgs) != len(want.msgs) {
			t.Fatalf("delivered %d messages, want %d\ngot  %v\nwant %v", len(got.msgs), len(want.msgs), got.msgs, want.msgs)
		}
		for i := range want.msgs {
			if got.msgs[i].binary != want.msgs[i].binary || !bytes.Equal(got.msgs[i].data, want.msgs[i].data) {
				t.Fatalf("message %d = %v, want %v", i, got.msgs[i], want.msgs[i])
			}
		}
		if len(got.closed) != 1 || got.closed[0] != want.reported {
			t.Fatalf("HandleClose calls = %v, want exactly [%d]", got.closed, want.reported)
		}
		if got.sent != want.sent {
			t.Fatalf("close frame sent with code %d, want %d", got.sent, want.sent)
		}
		// Pongs queued in the same read as a close are dropped by the
		// close (frames not yet started are not sent), so after a close
		// only a prefix is owed; without one, every pong.
		if len(got.pongs) > len(want.pongs) || (want.sent == 0 && len(got.pongs) != len(want.pongs)) {
			t.Fatalf("%d pongs, want %d", len(got.pongs), len(want.pongs))
		}
		for i := range got.pongs {
			if !bytes.Equal(got.pongs[i], want.pongs[i]) {
				t.Fatalf("pong %d = %q, want %q", i, got.pongs[i], want.pongs[i])
			}
		}
		if got.maxHeld > maxFrameHeader+fuzzMaxMessage {
			t.Fatalf("held %d bytes between reads, bound is %d", got.maxHeld, maxFrameHeader+fuzzMaxMessage)
		}
	}
}

// deflateSeeds are compressed client streams.
func deflateSeeds() []frameSeed {
	z := func(p []byte) []byte {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, flate.BestCompression)
		w.Write(p)
		w.Flush()
		return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	}
	const rsv1 = 4 // clientFrame shifts rsv by 4: RSV1 is 0x40
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	msg := []byte(`[null,"1","room:a","move",{"x":12,"y":34,"path":"` + strings.Repeat("ab", 40) + `"}]`)
	zm := z(msg)
	bomb := z(make([]byte, 5000)) // inflates far past the 300-byte cap
	return []frameSeed{
		{clientFrame(true, rsv1, opText, true, zm, 0), nil},
		{clientFrame(true, rsv1, opBinary, true, zm, 0), []byte{2, 9}},
		{cat(clientFrame(false, rsv1, opText, true, zm[:5], 0), clientFrame(true, 0, opPing, true, []byte("p"), 0),
			clientFrame(true, 0, opContinuation, true, zm[5:], 0)), []byte{3}},
		{cat(clientFrame(true, 0, opText, true, msg, 0), clientFrame(true, rsv1, opText, true, zm, 0)), nil}, // plain then compressed
		{clientFrame(true, rsv1, opBinary, true, bomb, 0), nil},                                              // 1009
		{cat(clientFrame(false, rsv1, opBinary, true, bomb[:4], 0), clientFrame(true, 0, opContinuation, true, bomb[4:], 0)), nil},
		{clientFrame(true, rsv1, opPing, true, []byte("p"), 0), nil},                                                            // 1002
		{cat(clientFrame(false, rsv1, opText, true, zm[:5], 0), clientFrame(true, rsv1, opContinuation, true, zm[5:], 0)), nil}, // 1002
		{clientFrame(true, rsv1, opText, true, []byte{0xff, 0xff, 0xff}, 0), nil},                                               // 1007
		{clientFrame(true, rsv1, opText, true, z([]byte("\xff\xfe")), 0), nil},                                                  // not UTF-8 once inflated: 1007
		{clientFrame(true, rsv1, opText, true, nil, 0), nil},                                                                    // empty compressed message
	}
}

type fuzzMsg struct {
	binary bool
	data   []byte
}

func (m fuzzMsg) String() string { return fmt.Sprintf("{binary:%v %q}", m.binary, m.data) }

// frameOutcome is what one run shows from outside the parser.
type frameOutcome struct {
	msgs     []fuzzMsg
	closed   []transport.CloseCode // HandleClose calls
	pongs    [][]byte              // pong payloads the peer received
	sent     transport.CloseCode   // code of the close frame the peer received; 0 = none
	reported transport.CloseCode   // (reference only) what HandleClose should get
	maxHeld  int                   // most bytes kept on the connection between reads
}

type recordSession struct{ out *frameOutcome }

func (r recordSession) HandleMessage(binary bool, data []byte) {
	r.out.msgs = append(r.out.msgs, fuzzMsg{binary, bytes.Clone(data)})
}
func (r recordSession) HandleClose(code transport.CloseCode) {
	r.out.closed = append(r.out.closed, code)
}

// runFramesWith runs stream through a real conn whose socket is one end of
// a socketpair, without epoll: the test plays the loop (read, consume,
// flush) and reads what the server wrote from the other end. With deflate
// the connection negotiated permessage-deflate.
func runFramesWith(t *testing.T, stream, cuts []byte, deflate bool) frameOutcome {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	peer := fds[1]
	defer unix.Close(peer)
	s := &Server{cfg: Config{Loops: 1, MaxMessageSize: fuzzMaxMessage}, closes: make(map[transport.CloseCode]uint64)}
	s.cfg.setDefaults()
	l := &loop{s: s, epfd: -1, efd: -1, buf: make([]byte, readBufferSize)}
	s.loops = []*loop{l}
	var out frameOutcome
	c := &conn{l: l, fd: int32(fds[0]), sess: recordSession{&out}, deflate: deflate}

	var wire []byte
	drain := func() {
		l.flushDirty()
		var b [4096]byte
		for {
			n, err := unix.Read(peer, b[:])
			if n <= 0 || err != nil {
				return
			}
			wire = append(wire, b[:n]...)
		}
	}
	for i := 0; len(stream) > 0 && c.fd >= 0; i++ {
		n := len(stream)
		if len(cuts) > 0 {
			n = min(n, int(cuts[i%len(cuts)])+1)
		}
		// Like the loop, hand consume the shared read buffer, and scribble
		// over it afterwards: nothing may keep pointing into it.
		chunk := l.buf[:n]
		copy(chunk, stream[:n])
		stream = stream[n:]
		l.budget = inflateBudget
		if !l.consume(c, chunk) && c.fd >= 0 {
			t.Fatal("consume reported the connection finished, but its fd is open")
		}
		// Over its inflate budget the loop parses the rest in later turns
		// (its resume task); play them here.
		for k := 0; c.paused && c.fd >= 0; k++ {
			if k > 1000 {
				t.Fatal("still paused after 1000 turns")
			}
			c.paused = false
			l.budget = inflateBudget
			l.consume(c, nil)
		}
		for j := range chunk {
			chunk[j] = 0xA5
		}
		if c.in != nil {
			out.maxHeld = max(out.maxHeld, len(c.in.pend)+len(c.in.msg))
		}
		drain()
	}
	if c.fd >= 0 {
		l.finish(c, transport.CloseAbnormal) // the peer hung up
	}
	drain()

	// The server's frames are unmasked and well formed: parse them simply.
	for len(wire) > 0 {
		if len(wire) < 2 || wire[1]&0x80 != 0 || wire[1]&0x7F > 125 {
			t.Fatalf("server wrote a malformed frame: %x", wire)
		}
		op, n := wire[0]&0x0F, int(wire[1])
		if wire[0]&0xF0 != 0x80 || len(wire) < 2+n {
			t.Fatalf("server wrote a malformed frame: %x", wire)
		}
		p := wire[2 : 2+n]
		wire = wire[2+n:]
		switch {
		case out.sent != 0:
			t.Fatalf("frame (op %d) after the close frame", op)
		case op == opPong:
			out.pongs = append(out.pongs, bytes.Clone(p))
		case op == opClose && n >= 2:
			out.sent = transport.CloseCode(binary.BigEndian.Uint16(p))
			if !utf8.Valid(p[2:]) {
				t.Fatalf("close reason is not UTF-8: %q", p[2:])
			}
		default:
			t.Fatalf("unexpected server frame op %d payload %q", op, p)
		}
	}
	return out
}

// referenceDecodeWith decodes a whole client stream in one pass, straight from
// RFC 6455 §5 and §7.4, with the server's policy: fail on the first
// violation with its close code and read nothing after it; answer pings;
// echo a peer's close code (1000 when it gave none).
//
// With deflate, permessage-deflate was negotiated (RFC 7692 §6: RSV1 marks
// the first frame of a compressed data message; the cap applies to
// inflated bytes too).
func referenceDecodeWith(in []byte, maxMsg int, deflate bool) frameOutcome {
	var r frameOutcome
	var fragZ bool
	fail := func(code transport.CloseCode) frameOutcome {
		r.sent, r.reported = code, code
		return r
	}
	var frag []byte
	fragOp := -1
	for len(in) >= 2 {
		fin, rsv, op := in[0]&0x80 != 0, in[0]&0x70, int(in[0]&0x0F)
		masked, length := in[1]&0x80 != 0, uint64(in[1]&0x7F)
		if rsv&0x30 != 0 || rsv != 0 && !deflate {
			return fail(transport.CloseProtocolError) // no extension uses them
		}
		if !slices.Contains([]int{0, 1, 2, 8, 9, 10}, op) {
			return fail(transport.CloseProtocolError)
		}
		z := rsv != 0
		if z && op != 1 && op != 2 {
			return fail(transport.CloseProtocolError) // RSV1 only on a message's first frame
		}
		if !masked {
			return fail(transport.CloseProtocolError) // §5.1: clients mask
		}
		hdr := 2
		switch length {
		case 126:
			if len(in) < 4 {
				return r.open()
			}
			length, hdr = uint64(in[2])<<8|uint64(in[3]), 4
			if length < 126 {
				return fail(transport.CloseProtocolError) // §5.2: minimal encoding
			}
		case 127:
			if len(in) < 10 {
				return r.open()
			}
			length, hdr = binary.BigEndian.Uint64(in[2:10]), 10
			if length>>63 != 0 || length <= 0xFFFF {
				return fail(transport.CloseProtocolError)
			}
		}
		if op >= 8 && (!fin || length > 125) {
			return fail(transport.CloseProtocolError) // §5.5
		}
		if length > uint64(maxMsg) || op == 0 && fragOp >= 0 && uint64(len(frag))+length > uint64(maxMsg) {
			return fail(transport.CloseMessageTooBig) // known from the header: not buffered
		}
		if len(in) < hdr+4 || uint64(len(in)-hdr-4) < length {
			return r.open()
		}
		key := in[hdr : hdr+4]
		p := make([]byte, length)
		for i := range p {
			p[i] = in[hdr+4+i] ^ key[i%4]
		}
		in = in[hdr+4+int(length):]
		switch op {
		case 9:
			r.pongs = append(r.pongs, p)
		case 10:
		case 8:
			code := transport.CloseNoStatus
			if len(p) == 1 {
				return fail(transport.CloseProtocolError)
			}
			if len(p) >= 2 {
				code = transport.CloseCode(p[0])<<8 | transport.CloseCode(p[1])
				ok := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
				if !ok {
					return fail(transport.CloseProtocolError)
				}
				if !utf8.Valid(p[2:]) {
					return fail(transport.CloseInvalidPayload)
				}
			}
			r.reported, r.sent = code, code
			if code == transport.CloseNoStatus {
				r.sent = transport.CloseNormal
			}
			return r
		case 1, 2:
			if fragOp >= 0 {
				return fail(transport.CloseProtocolError)
			}
			if !fin {
				fragOp, frag, fragZ = op, p, z
				continue
			}
			if z {
				var code transport.CloseCode
				if p, code = refInflate(p, maxMsg); code != 0 {
					return fail(code)
				}
			}
			if op == 1 && !utf8.Valid(p) {
				return fail(transport.CloseInvalidPayload)
			}
			r.msgs = append(r.msgs, fuzzMsg{op == 2, p})
		case 0:
			if fragOp < 0 {
				return fail(transport.CloseProtocolError)
			}
			frag = append(frag, p...)
			if fin {
				if fragZ {
					var code transport.CloseCode
					if frag, code = refInflate(frag, maxMsg); code != 0 {
						return fail(code)
					}
				}
				if fragOp == 1 && !utf8.Valid(frag) {
					return fail(transport.CloseInvalidPayload)
				}
				r.msgs = append(r.msgs, fuzzMsg{fragOp == 2, frag})
				fragOp, frag = -1, nil
			}
		}
	}
	return r.open()
}

// refInflate inflates a compressed message the RFC 7692 way (its 00 00 ff
// ff appended), reading at most maxMsg+1 bytes: over maxMsg is 1009, a
// stream that does not inflate 1007.
func refInflate(p []byte, maxMsg int) ([]byte, transport.CloseCode) {
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff}))
	out, err := io.ReadAll(io.LimitReader(flate.NewReader(src), int64(maxMsg)+1))
	switch {
	case len(out) > maxMsg:
		return nil, transport.CloseMessageTooBig
	case err != nil && !errors.Is(err, io.ErrUnexpectedEOF):
		return nil, transport.CloseInvalidPayload
	}
	return out, 0
}

// open is the outcome of a stream that ended with the connection open: the
// peer hung up (1006), no close frame.
func (r frameOutcome) open() frameOutcome {
	r.reported = transport.CloseAbnormal
	return r
}

type frameSeed struct{ stream, cuts []byte }

// clientFrame encodes one client frame. length < 0 means len(payload);
// lenForm forces the 7-bit (0), 16-bit (126) or 64-bit (127) length form.
func clientFrame(fin bool, rsv, op byte, masked bool, payload []byte, lenForm int) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	n := len(payload)
	b := []byte{b0}
	switch {
	case lenForm == 127 || lenForm == 0 && n > 0xFFFF:
		b = append(b, mbit|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	case lenForm == 126 || lenForm == 0 && n > 125:
		b = append(b, mbit|126, byte(n>>8), byte(n))
	default:
		b = append(b, mbit|byte(n))
	}
	if !masked {
		return append(b, payload...)
	}
	key := [4]byte{0x37, 0xFA, 0x21, 0x3D}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func frameSeeds() []frameSeed {
	m := func(op byte, p string) []byte { return clientFrame(true, 0, op, true, []byte(p), 0) }
	frag := func(fin bool, op byte, p string) []byte { return clientFrame(fin, 0, op, true, []byte(p), 0) }
	cat := func(fs ...[]byte) []byte { return bytes.Join(fs, nil) }
	closeP := func(code uint16, reason string) string {
		return string(binary.BigEndian.AppendUint16(nil, code)) + reason
	}
	big := string(bytes.Repeat([]byte("x"), 200))
	huge := string(bytes.Repeat([]byte("y"), 70000))
	one, ones := []byte{0}, []byte{0, 1, 2, 6, 13}
	return []frameSeed{
		{m(opText, `[null,"1","phoenix","heartbeat",{}]`), nil},
		{m(opText, "héllo"), one},                                       // one byte per read
		{m(opBinary, "\x00\x01\x02\xff"), ones},                         // binary, odd cuts
		{clientFrame(true, 0, opText, false, []byte("hi"), 0), nil},     // unmasked: 1002
		{clientFrame(true, 2, opText, true, []byte("hi"), 0), nil},      // RSV2: 1002
		{clientFrame(true, 0, 3, true, []byte("hi"), 0), nil},           // reserved data opcode
		{clientFrame(true, 0, 0xB, true, nil, 0), nil},                  // reserved control opcode
		{m(opBinary, big), []byte{3, 255}},                              // 16-bit length
		{clientFrame(true, 0, opText, true, []byte("short"), 126), nil}, // non-minimal 16-bit
		{clientFrame(true, 0, opText, true, []byte(big), 127), nil},     // non-minimal 64-bit
		{m(opBinary, huge)[:200], nil},                                  // 64-bit, over the cap: 1009
		{append([]byte{0x82, 0xFF, 0x80}, make([]byte, 11)...), nil},    // 64-bit length with MSB set
		{cat(frag(false, opText, "hel"), m(opPing, "p1"), frag(false, opContinuation, "lo "), frag(true, opContinuation, "wörld")), []byte{4}},
		{cat(frag(false, opText, "\xc3"), frag(true, opContinuation, "\xa9")), one}, // rune split across fragments
		{m(opText, "\xff\xfe"), nil},                                                   // invalid UTF-8: 1007
		{cat(frag(false, opText, "a"), m(opText, "b")), nil},                           // interleaved: 1002
		{m(opContinuation, "orphan"), nil},                                             // continuation first: 1002
		{cat(frag(false, opBinary, big), frag(true, opContinuation, big)), []byte{63}}, // fragments over the cap: 1009
		{clientFrame(false, 0, opPing, true, []byte("x"), 0), nil},                     // fragmented control: 1002
		{m(opPing, big[:126]), nil},                                                    // control over 125: 1002
		{cat(m(opPing, "a"), m(opPong, "b"), m(opPing, ""), m(opText, "t")), []byte{1, 7}},
		{cat(m(opText, "bye"), m(opClose, closeP(1000, "done")), m(opText, "after")), nil},
		{m(opClose, ""), nil},                                 // no code: echoed as 1000, reported 1005
		{m(opClose, "\x03"), nil},                             // one-byte close payload: 1002
		{m(opClose, closeP(1005, "")), nil},                   // reserved code: 1002
		{m(opClose, closeP(4000, "\xff")), nil},               // reason not UTF-8: 1007
		{m(opClose, closeP(3000, "app")), ones},               // application code
		{cat(m(opPing, "1"), []byte{0x81}), nil},              // ends inside a header
		{cat(m(opText, "x"), m(opText, big)[:40]), []byte{9}}, // ends inside a payload
		// A violation found while bytes of an unfinished frame are held,
		// then more input: what is held must not grow.
		{cat([]byte{0x81}, []byte{0x05}, bytes.Repeat([]byte("z"), 400)), []byte{0, 255}},
	}
}
