package ws_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// dialDeflate dials offering permessage-deflate the way browsers do
// ("permessage-deflate; client_max_window_bits") and returns the
// negotiated parameters (ok=false: the server declined).
func dialDeflate(t *testing.T, url string) (net.Conn, wsflate.Parameters, bool) {
	t.Helper()
	offer := wsflate.Parameters{ClientMaxWindowBits: 15}.Option()
	d := ws.Dialer{Extensions: []httphead.Option{offer}}
	c, _, hs, err := d.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, opt := range hs.Extensions {
		var p wsflate.Parameters
		if err := p.Parse(opt); err == nil {
			if !p.ServerNoContextTakeover || !p.ClientNoContextTakeover {
				t.Fatalf("response %s lacks a no_context_takeover parameter", opt.String())
			}
			return c, p, true
		}
	}
	return c, wsflate.Parameters{}, false
}

// compress deflates p the permessage-deflate way (sync flush, its 00 00
// ff ff removed).
func compress(t *testing.T, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func inflate(t *testing.T, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil && err != io.ErrUnexpectedEOF {
		t.Fatalf("inflate: %v", err)
	}
	return out
}

type wireFrame struct {
	h ws.Header
	p []byte
}

func readWire(t *testing.T, c net.Conn) wireFrame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	h, err := ws.ReadHeader(c)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c, p); err != nil {
		t.Fatal(err)
	}
	return wireFrame{h, p}
}

// readMessage reads one data message (skipping control frames) and
// returns it inflated, whether it was compressed, and its size on the wire.
func readMessage(t *testing.T, c net.Conn) (msg []byte, compressed bool, wire int) {
	t.Helper()
	var data []byte
	first := true
	for {
		f := readWire(t, c)
		if f.h.OpCode.IsControl() {
			if f.h.OpCode == ws.OpClose {
				t.Fatalf("closed: %x", f.p)
			}
			continue
		}
		if first {
			compressed = f.h.Rsv1()
			first = false
		} else if f.h.Rsv1() {
			t.Fatal("RSV1 on a continuation frame")
		}
		wire += len(f.p) + 2
		data = append(data, f.p...)
		if f.h.Fin {
			break
		}
	}
	if compressed {
		return inflate(t, data), true, wire
	}
	return data, false, wire
}

func TestDeflateNegotiatedOnlyWhenEnabled(t *testing.T) {
	off := newFixture(t, fws.Config{})
	if _, _, ok := dialDeflate(t, off.url); ok {
		t.Fatal("compression negotiated with Compression off")
	}
	on := newFixture(t, fws.Config{Compression: true})
	_, p, ok := dialDeflate(t, on.url)
	if !ok || !p.ServerNoContextTakeover || !p.ClientNoContextTakeover {
		t.Fatalf("negotiated %v %+v, want both no_context_takeover", ok, p)
	}
}

// TestDeflateEcho: compressed and plain pushes are both accepted; replies
// over the threshold come back compressed (RSV1, smaller), those under it
// plain.
func TestDeflateEcho(t *testing.T) {
	f := newFixture(t, fws.Config{Compression: true, CompressMin: 100})
	c, _, ok := dialDeflate(t, f.url)
	if !ok {
		t.Fatal("not negotiated")
	}
	big := []byte(strings.Repeat(`{"player":"ann","x":12,"y":34},`, 40))
	small := []byte(`["1","1","room:a","ping",{}]`)

	writeFrame(t, c, true, ws.Rsv(true, false, false), ws.OpText, true, compress(t, big))
	got, compressed, wire := readMessage(t, c)
	if !bytes.Equal(got, big) || !compressed || wire >= len(big) {
		t.Fatalf("big echo: compressed=%v wire=%d len=%d equal=%v", compressed, wire, len(big), bytes.Equal(got, big))
	}
	writeFrame(t, c, true, 0, ws.OpBinary, true, big) // plain push, same connection
	if got, compressed, _ = readMessage(t, c); !bytes.Equal(got, big) || !compressed {
		t.Fatalf("plain push echo: compressed=%v", compressed)
	}
	writeFrame(t, c, true, ws.Rsv(true, false, false), ws.OpText, true, compress(t, small))
	if got, compressed, _ = readMessage(t, c); !bytes.Equal(got, small) || compressed {
		t.Fatalf("small echo: %q compressed=%v (threshold 100)", got, compressed)
	}
	// A compressed message in fragments: RSV1 on the first only.
	z := compress(t, big)
	writeFrame(t, c, false, ws.Rsv(true, false, false), ws.OpText, true, z[:10])
	writeFrame(t, c, true, 0, ws.OpPing, true, []byte("p"))
	writeFrame(t, c, true, 0, ws.OpContinuation, true, z[10:])
	if got, _, _ = readMessage(t, c); !bytes.Equal(got, big) {
		t.Fatalf("fragmented echo: %q", got)
	}
}

// TestDeflateSharedFrames: one message sent to several connections is
// compressed once (the very same bytes reach every compressed member), a
// plain member on the same server gets it plain, and a message with a
// shared Tail (presence_state) decodes to head+tail everywhere.
func TestDeflateSharedFrames(t *testing.T) {
	f := newFixture(t, fws.Config{Compression: true, CompressMin: 64})
	z1, _, _ := dialDeflate(t, f.url)
	z2, _, _ := dialDeflate(t, f.url)
	plain := f.dial(t)
	for deadline := time.Now().Add(10 * time.Second); f.count() < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("connections not upgraded")
		}
	}
	sess := f.sessions() // in upgrade order: z1, z2, plain (each dial waits for its 101)

	cls := &transport.Compression{Name: "room"}
	body := []byte(strings.Repeat(`{"id":"u1","meta":{"online_at":"1700000000"}},`, 30))
	m := transport.NewText(body)
	m.Compression = cls
	tail := transport.NewText(body)
	tail.Compression = cls // the shared part is counted on its own class
	mt := &transport.Message{Data: []byte(`["1",null,"room:a","presence_state",`), Tail: tail, Compression: cls}
	for _, e := range sess {
		e.c.Send(m)
		e.c.Send(mt)
	}
	var wires []int
	for i, c := range []net.Conn{z1, z2, plain} {
		got, compressed, wire := readMessage(t, c)
		if !bytes.Equal(got, body) || compressed != (i < 2) {
			t.Fatalf("conn %d: compressed=%v equal=%v", i, compressed, bytes.Equal(got, body))
		}
		wires = append(wires, wire)
		got, compressed, _ = readMessage(t, c)
		if !bytes.Equal(got, mt.Bytes()) || compressed != (i < 2) {
			t.Fatalf("conn %d tail message: compressed=%v %q", i, compressed, got)
		}
	}
	if wires[0] != wires[1] || wires[0] >= wires[2]/2 {
		t.Fatalf("wire sizes %v: want equal compressed sizes under half the plain one", wires)
	}
	// Counted once per message, not per delivery: m, then mt's head and
	// its tail.
	before, after := cls.Bytes()
	if want := uint64(len(body)*2 + len(mt.Data)); before != want || after == 0 || after >= before/2 {
		t.Fatalf("class counted %d → %d bytes, want %d → under half", before, after, want)
	}
}

func TestDeflateBadBits(t *testing.T) {
	t.Run("rsv1 without negotiation", func(t *testing.T) {
		f := newFixture(t, fws.Config{Compression: true})
		c := f.dial(t) // offers no extension
		writeFrame(t, c, true, ws.Rsv(true, false, false), ws.OpText, true, compress(t, []byte("hello")))
		if code := expectClose(t, c); code != 1002 {
			t.Fatalf("close %d, want 1002", code)
		}
	})
	for name, fr := range map[string]struct {
		fin bool
		op  ws.OpCode
	}{"ping": {true, ws.OpPing}, "close": {true, ws.OpClose}} {
		t.Run("rsv1 on "+name, func(t *testing.T) {
			f := newFixture(t, fws.Config{Compression: true})
			c, _, _ := dialDeflate(t, f.url)
			writeFrame(t, c, fr.fin, ws.Rsv(true, false, false), fr.op, true, []byte{3, 232})
			if code := expectClose(t, c); code != 1002 {
				t.Fatalf("close %d, want 1002", code)
			}
		})
	}
	t.Run("rsv1 on continuation", func(t *testing.T) {
		f := newFixture(t, fws.Config{Compression: true})
		c, _, _ := dialDeflate(t, f.url)
		z := compress(t, []byte(strings.Repeat("abc", 100)))
		writeFrame(t, c, false, ws.Rsv(true, false, false), ws.OpText, true, z[:4])
		writeFrame(t, c, true, ws.Rsv(true, false, false), ws.OpContinuation, true, z[4:])
		if code := expectClose(t, c); code != 1002 {
			t.Fatalf("close %d, want 1002", code)
		}
	})
	t.Run("corrupt stream", func(t *testing.T) {
		f := newFixture(t, fws.Config{Compression: true})
		c, _, _ := dialDeflate(t, f.url)
		writeFrame(t, c, true, ws.Rsv(true, false, false), ws.OpText, true, []byte{0xff, 0xff, 0xff, 0xff})
		if code := expectClose(t, c); code != 1007 {
			t.Fatalf("close %d, want 1007", code)
		}
	})
}

// zeroBomb is a deflate stream inflating to n MiB of zeros: one
// sync-flushed block of 1 MiB of zeros (about 1 KiB) repeated, the
// blocks being independent. Deflate's ratio tops out near 1:1032, so
// 1 GiB takes about 1 MiB.
func zeroBomb(t *testing.T, mib int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(make([]byte, 1<<20))
	w.Flush()
	block := b.Bytes()
	return bytes.TrimSuffix(bytes.Repeat(block, mib), []byte{0, 0, 0xff, 0xff})
}

// TestDeflateBomb: a compressed message that inflates past the cap is
// closed with 1009 once the cap is passed, not after inflating it all;
// fragments count together, pings in between change nothing; the other
// connections keep working; the process does not grow by 2× the cap.
func TestDeflateBomb(t *testing.T) {
	const maxMsg = 8 << 20
	f := newFixture(t, fws.Config{Compression: true, MaxMessageSize: maxMsg})
	bomb := zeroBomb(t, 1024) // 1 GiB inflated
	t.Logf("bomb: %d bytes compressed, 1 GiB inflated", len(bomb))
	bystander, _, _ := dialDeflate(t, f.url)

	t.Run("one frame", func(t *testing.T) {
		runtime.GC()
		debug.FreeOSMemory()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		rss0 := rssBytes(t)
		c, _, _ := dialDeflate(t, f.url)
		go sendFrame(c, true, ws.Rsv(true, false, false), ws.OpBinary, true, bomb)
		if code := expectClose(t, c); code != 1009 {
			t.Fatalf("close %d, want 1009", code)
		}
		grew := rssBytes(t) - rss0
		runtime.ReadMemStats(&m1)
		alloc := int(m1.TotalAlloc - m0.TotalAlloc)
		t.Logf("1 GiB bomb vs a %d KiB cap: RSS grew by %d KiB, %d KiB allocated (client's copy of the bomb included)", maxMsg>>10, grew>>10, alloc>>10)
		// Allocations, race detector or not: the inflated bytes (at most
		// the cap and one byte) plus the compressed message buffered while
		// it arrives (its buffer grows by doubling: up to 4× its size,
		// with the client's copy).
		if bound := 2*maxMsg + 4*len(bomb); alloc >= bound {
			t.Fatalf("allocated %d bytes, want < %d (2× the %d-byte cap + 4× the %d-byte message)", alloc, bound, maxMsg, len(bomb))
		}
		if !raceEnabled && grew >= 2*maxMsg {
			t.Fatalf("RSS grew by %d bytes, want < 2× the %d-byte cap", grew, maxMsg)
		}
	})
	t.Run("fragments with pings", func(t *testing.T) {
		c, _, _ := dialDeflate(t, f.url)
		// 9 MiB inflated in 64-KiB-compressed... no: 1 KiB fragments, each
		// far under the cap, a ping after each.
		part := zeroBomb(t, 9)
		go func() {
			const step = 1024
			for i := 0; i < len(part); i += step {
				rsv := byte(0)
				op := ws.OpContinuation
				if i == 0 {
					rsv, op = ws.Rsv(true, false, false), ws.OpText
				}
				if sendFrame(c, i+step >= len(part), rsv, op, true, part[i:min(len(part), i+step)]) != nil {
					return
				}
				if sendFrame(c, true, 0, ws.OpPing, true, []byte(strconv.Itoa(i))) != nil {
					return
				}
			}
		}()
		if code := expectClose(t, c); code != 1009 {
			t.Fatalf("close %d, want 1009", code)
		}
	})
	// The bystander was never disturbed.
	msg := []byte(strings.Repeat("still here ", 50))
	writeFrame(t, bystander, true, ws.Rsv(true, false, false), ws.OpText, true, compress(t, msg))
	if got, _, _ := readMessage(t, bystander); !bytes.Equal(got, msg) {
		t.Fatalf("bystander echo %q", got)
	}
}

// TestDeflateBudget: many small compressed messages in one read, each
// inflating to near the cap, are all delivered, in order, across several
// read turns, while another connection is served in between.
func TestDeflateBudget(t *testing.T) {
	const maxMsg = 64 << 10
	f := newFixture(t, fws.Config{Compression: true, MaxMessageSize: maxMsg, Loops: 1})
	c, _, _ := dialDeflate(t, f.url)
	var stream bytes.Buffer
	const n = 64 // 64 × 60 KiB = 3.75 MiB inflated, over several budgets
	for i := range n {
		p := append([]byte(strconv.Itoa(i)+":"), make([]byte, 60<<10)...)
		z := compress(t, p)
		h := ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpBinary, Length: int64(len(z)), Masked: true, Mask: ws.NewMask()}
		ws.Cipher(z, h.Mask, 0)
		ws.WriteHeader(&stream, h)
		stream.Write(z)
	}
	go c.Write(stream.Bytes())
	for i := range n {
		got, _, _ := readMessage(t, c)
		if want := strconv.Itoa(i) + ":"; !bytes.HasPrefix(got, []byte(want)) || len(got) != len(want)+60<<10 {
			t.Fatalf("message %d: %q… (%d bytes)", i, got[:min(len(got), 8)], len(got))
		}
	}
}

func rssBytes(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
