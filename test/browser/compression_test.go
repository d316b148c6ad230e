package browser

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/internal/app"
)

// wireFrame is one WebSocket frame seen by the recording proxy.
type wireFrame struct {
	conn       int // the proxied connection, numbered from 0 in accept order
	fromClient bool
	fin, rsv1  bool
	op         byte
	n          int // payload bytes on the wire
}

// wireLog records the frames of every WebSocket the proxy carried, and
// the extensions the server's 101 accepted.
type wireLog struct {
	mu         sync.Mutex
	frames     []wireFrame
	extensions map[int]string // by connection, as the server's 101 said
	gzipped    int            // plain HTTP responses with Content-Encoding: gzip
}

func (l *wireLog) snapshot() ([]wireFrame, map[int]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	exts := make(map[int]string, len(l.extensions))
	for k, v := range l.extensions {
		exts[k] = v
	}
	return append([]wireFrame(nil), l.frames...), exts
}

// recordingProxy forwards TCP to upstream and parses what passes: after a
// WebSocket handshake, each direction's frames (headers only) go to the log.
func recordingProxy(t *testing.T, upstream string) (string, *wireLog) {
	t.Helper()
	ln := listenLoopback(t)
	wl := &wireLog{extensions: map[int]string{}}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for id := 0; ; id++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			pipe := func(dst, src net.Conn, fromClient bool) {
				defer wg.Done()
				defer dst.Close()
				p := &frameParser{log: wl, conn: id, fromClient: fromClient}
				_, _ = io.Copy(dst, io.TeeReader(src, p))
			}
			go pipe(u, c, true)
			go pipe(c, u, false)
			t.Cleanup(func() { c.Close(); u.Close() })
		}
	}()
	return ln.Addr().String(), wl
}

// frameParser is an io.Writer fed one direction of a connection.
type frameParser struct {
	log        *wireLog
	conn       int
	fromClient bool
	buf        []byte
	inFrames   bool // past a WebSocket handshake
	off        bool // a plain HTTP connection: only gzipped responses are counted
	tail       []byte
}

func (p *frameParser) Write(b []byte) (int, error) {
	if p.off {
		if !p.fromClient {
			// Count "Content-Encoding: gzip" header lines, also across writes.
			const marker = "\r\ncontent-encoding: gzip\r\n"
			s := strings.ToLower(string(p.tail) + string(b))
			p.log.mu.Lock()
			p.log.gzipped += strings.Count(s, marker)
			p.log.mu.Unlock()
			p.tail = []byte(s[max(0, len(s)-len(marker)+1):])
		}
		return len(b), nil
	}
	p.buf = append(p.buf, b...)
	if !p.inFrames {
		end := bytes.Index(p.buf, []byte("\r\n\r\n"))
		if end < 0 {
			return len(b), nil
		}
		head := string(p.buf[:end])
		if !strings.Contains(strings.ToLower(head), "upgrade: websocket") {
			p.off = true
			buf := p.buf
			p.buf = nil
			return p.Write(buf)
		}
		if !p.fromClient {
			for _, line := range strings.Split(head, "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Extensions") {
					p.log.mu.Lock()
					p.log.extensions[p.conn] = strings.TrimSpace(v)
					p.log.mu.Unlock()
				}
			}
		}
		p.inFrames = true
		p.buf = p.buf[end+4:]
	}
	for {
		f, size, ok := parseWire(p.buf)
		if !ok {
			break
		}
		f.conn, f.fromClient = p.conn, p.fromClient
		p.log.mu.Lock()
		p.log.frames = append(p.log.frames, f)
		p.log.mu.Unlock()
		p.buf = p.buf[size:]
	}
	return len(b), nil
}

func parseWire(b []byte) (wireFrame, int, bool) {
	if len(b) < 2 {
		return wireFrame{}, 0, false
	}
	f := wireFrame{fin: b[0]&0x80 != 0, rsv1: b[0]&0x40 != 0, op: b[0] & 0x0F}
	n, h := int(b[1]&0x7F), 2
	switch n {
	case 126:
		if len(b) < 4 {
			return f, 0, false
		}
		n, h = int(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, 0, false
		}
		n, h = int(binary.BigEndian.Uint64(b[2:])), 10
	}
	if b[1]&0x80 != 0 {
		h += 4
	}
	if len(b) < h+n {
		return f, 0, false
	}
	f.n = n
	return f, h + n, true
}

// Chromium negotiates permessage-deflate with a gateway running
// --compression: JSON and binary broadcasts reach it compressed (RSV1,
// fewer bytes than the message), its own pushes go out compressed and are
// accepted (they come back as broadcasts), all checked on the wire by a
// recording proxy between the browser and the gateway.
func TestChromiumCompression(t *testing.T) {
	requireBrowser(t)
	const secret = "browser-test-secret-0123456789abcdef"
	g := startGateway(t, app.Config{
		Listen:               "127.0.0.1:0",
		OpsListen:            "off",
		NATSListen:           "127.0.0.1:0",
		DataDir:              t.TempDir(),
		JWTSecret:            secret,
		AllowQueryToken:      true,
		LeaveGrace:           50 * time.Millisecond,
		Home:                 testPages(t),
		Compression:          true,
		CompressionThreshold: 256,
	})
	token, err := auth.Mint(auth.Config{Secret: []byte(secret)},
		auth.MintClaims{Subject: "browser-test", Channels: []string{"room:*"}, Publish: []string{"room:*"}})
	if err != nil {
		t.Fatal(err)
	}
	addr, wl := recordingProxy(t, g.HTTPAddr())

	b := startBrowser(t)
	b.open(fmt.Sprintf("http://%s/page.html?topic=room:zip&token=%s", addr, url.QueryEscape(token)), 1000, 700)
	b.wait("join", `window.fabricLog.some((e) => e.ev === "join" && e.status === "ok")`, 15*time.Second)

	// A JSON push and a binary push (both compressible, over the
	// threshold); each comes back to the page as a broadcast.
	text := strings.Repeat("the quick brown fox jumps over the lazy dog ", 30)
	b.eval(fmt.Sprintf(`(() => { window.fabric.channel.push("shout", {text: %q});
		const buf = new Uint8Array(2000); for (let i = 0; i < buf.length; i++) buf[i] = i %% 7;
		window.fabric.channel.push("blob", buf.buffer); return true })()`, text), nil)
	b.wait("both broadcasts", `["shout", "blob"].every((ev) => window.fabricLog.some((e) => e.ev === "msg" && e.event === ev))`, 15*time.Second)

	var shout, blob entry
	for _, e := range b.pageLog() {
		switch {
		case e.Ev == "msg" && e.Event == "shout":
			shout = e
		case e.Ev == "msg" && e.Event == "blob":
			blob = e
		}
	}
	if !strings.Contains(string(shout.Payload), text) {
		t.Fatalf("shout payload %s", shout.Payload)
	}
	var s string
	_ = json.Unmarshal(blob.Payload, &s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if !blob.Binary || err != nil || len(raw) != 2000 || raw[13] != 13%7 {
		t.Fatalf("blob: binary %v, %d bytes, %v", blob.Binary, len(raw), err)
	}

	frames, exts := wl.snapshot()
	var ext string
	for _, e := range exts {
		ext = e
	}
	if len(exts) != 1 || !strings.Contains(ext, "permessage-deflate") || !strings.Contains(ext, "server_no_context_takeover") || !strings.Contains(ext, "client_no_context_takeover") {
		t.Fatalf("101 extensions %v, want permessage-deflate with both no_context_takeover", exts)
	}
	// Data frames with RSV1 from each side, each smaller than its message.
	var up, downText, downBinary []wireFrame
	for _, f := range frames {
		if !f.rsv1 {
			continue
		}
		switch {
		case f.fromClient && f.n < len(text):
			up = append(up, f)
		case !f.fromClient && f.op == 1 && f.n < len(text):
			downText = append(downText, f)
		case !f.fromClient && f.op == 2 && f.n < 2000:
			downBinary = append(downBinary, f)
		}
	}
	t.Logf("compressed frames: %d from Chromium, %d text and %d binary to it; all frames %v", len(up), len(downText), len(downBinary), frames)
	if len(up) < 2 || len(downText) == 0 || len(downBinary) == 0 {
		t.Fatalf("want compressed pushes from Chromium (≥ 2) and compressed text and binary broadcasts to it; frames %+v", frames)
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
}
