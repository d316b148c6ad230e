package ws

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fuzzPath = "/socket/websocket"

// FuzzSplitHead sends a connection's first bytes, cut into writes by cuts,
// to the split listener's head reader (sniff → serveUpgrade) and checks
// where the connection went against a reference that decides from the
// whole input with net/http's own request parser:
//   - served on the upgrade path only when the input is a GET for the path
//     whose head (ended by the first empty line, as net/http ends it) fits
//     the head buffer, parses, and asks for "Upgrade: websocket"; the
//     handler then sees the request net/http would have parsed, and the
//     bytes after the head (early frames) arrive intact through the hijack;
//   - handed to net/http otherwise, with every byte read replayed exactly;
//   - dropped only when the input ends inside what could still be an
//     upgrade head.
func FuzzSplitHead(f *testing.F) {
	for _, s := range headSeeds() {
		f.Add(s.stream, s.cuts)
	}
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		if len(in) > 2*headSize {
			in = in[:2*headSize]
		}
		want := referenceRoute(in)
		got := runSplit(t, in, cuts)
		if got.route != want.route {
			t.Fatalf("route %s, want %s", got.route, want.route)
		}
		switch want.route {
		case routeServed:
			g, w := got.req, want.req
			if g.Method != w.Method || g.RequestURI != w.RequestURI || g.Proto != w.Proto || g.Host != w.Host ||
				!reflect.DeepEqual(g.Header, w.Header) {
				t.Fatalf("handler saw %s %q %s host %q %v\nnet/http parses %s %q %s host %q %v",
					g.Method, g.RequestURI, g.Proto, g.Host, g.Header, w.Method, w.RequestURI, w.Proto, w.Host, w.Header)
			}
			if g.RemoteAddr == "" {
				t.Fatal("RemoteAddr not set")
			}
			if !bytes.Equal(got.bytes, want.bytes) {
				t.Fatalf("bytes after the head through the hijack = %q, want %q", got.bytes, want.bytes)
			}
		case routeNetHTTP:
			if !bytes.Equal(got.bytes, in) {
				t.Fatalf("net/http reads %q, want the input replayed: %q", got.bytes, in)
			}
		}
	})
}

type route string

const (
	routeServed  route = "upgrade path"
	routeNetHTTP route = "net/http"
	routeDropped route = "dropped"
)

type headOutcome struct {
	route route
	req   *http.Request
	bytes []byte // served: bytes after the head; net/http: every byte it reads
}

// referenceRoute decides from the whole input.
func referenceRoute(in []byte) headOutcome {
	prefix := "GET " + fuzzPath
	if len(in) <= len(prefix) {
		if len(in) == 0 || strings.HasPrefix(prefix, string(in)) {
			return headOutcome{route: routeDropped} // could still become ours
		}
		return headOutcome{route: routeNetHTTP}
	}
	if !strings.HasPrefix(string(in), prefix) || (in[len(prefix)] != ' ' && in[len(prefix)] != '?') {
		return headOutcome{route: routeNetHTTP}
	}
	end := refHeadEnd(in[:min(len(in), headSize)])
	if end < 0 {
		if len(in) >= headSize {
			return headOutcome{route: routeNetHTTP} // too long for us: net/http's limits apply
		}
		return headOutcome{route: routeDropped}
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
	if err != nil || !upgradeWebsocket(req.Header["Upgrade"]) {
		return headOutcome{route: routeNetHTTP}
	}
	return headOutcome{route: routeServed, req: req, bytes: in[end:]}
}

// refHeadEnd is where net/http's reader ends a head: after the first empty
// line, lines ending in LF with an optional CR before it.
func refHeadEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		line := b[i : i+j]
		if i > 0 && (len(line) == 0 || string(line) == "\r") {
			return i + j + 1
		}
		i += j + 1
	}
}

// upgradeWebsocket: the comma-separated Upgrade values hold "websocket"
// (case-insensitive), surrounded only by HTTP's optional whitespace.
func upgradeWebsocket(values []string) bool {
	for _, v := range values {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.Trim(tok, " \t"), "websocket") {
				return true
			}
		}
	}
	return false
}

// runSplit plays one connection through sniff over an in-memory pipe.
func runSplit(t *testing.T, in, cuts []byte) headOutcome {
	type served struct {
		req   *http.Request
		early []byte
	}
	got := make(chan served, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		early := make([]byte, rw.Reader.Buffered())
		io.ReadFull(rw.Reader, early)
		more, _ := io.ReadAll(c)
		got <- served{r, append(early, more...)}
	})
	s := &splitListener{prefix: []byte("GET " + fuzzPath), h: h, timeout: 10 * time.Second,
		log: slog.New(slog.DiscardHandler), conns: make(chan net.Conn), done: make(chan struct{})}
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		rest := in
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(cuts) > 0 {
				n = min(n, int(cuts[i%len(cuts)])*8+1)
			}
			if _, err := client.Write(rest[:n]); err != nil {
				return // the server closed its end
			}
			rest = rest[n:]
		}
		client.Close()
	}()
	sniffed := make(chan struct{})
	go func() {
		s.sniff(server)
		close(sniffed)
	}()
	deadline := time.After(20 * time.Second)
	select {
	case pc := <-s.conns:
		b, err := io.ReadAll(pc)
		if err != nil {
			t.Fatalf("reading the handed-off connection: %v", err)
		}
		pc.Close()
		<-sniffed
		return headOutcome{route: routeNetHTTP, bytes: b}
	case <-sniffed:
		select {
		case sv := <-got:
			return headOutcome{route: routeServed, req: sv.req, bytes: sv.early}
		default:
			return headOutcome{route: routeDropped}
		}
	case <-deadline:
		t.Fatal("sniff neither routed nor dropped the connection within 20 s")
	}
	return headOutcome{}
}

func headSeeds() []frameSeed {
	up := "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: localhost:4000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: phoenix\r\n\r\n"
	frame := string(clientFrame(true, 0, opText, true, []byte(`[null,"1","phoenix","heartbeat",{}]`), 0))
	long := strings.Repeat("a", 3000)
	seeds := []string{
		up,
		up + frame, // early frame in the same packet as the head
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nuPgRaDe: WebSocket\r\ncOnNeCtIoN: upgrade\r\n\r\n", // weird casing
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, websocket\r\nConnection: Upgrade\r\n\r\n",
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\u00a0\r\n\r\n", // not HTTP whitespace
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\n\r\n",                             // no upgrade
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nCookie: " + long + "\r\nUpgrade: websocket\r\n\r\n",
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nCookie: " + long + long + "\r\nUpgrade: websocket\r\n\r\n", // over the head buffer
		"GET /socket/websocket HTTP/1.1\nHost: x\nUpgrade: websocket\n\n",                                        // bare LF lines
		"GET /socket/websocket HTTP/1.1\nHost: x\nUpgrade: websocket\n\n" + frame + "\r\n\r\n",
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n",      // ends before the empty line
		"GET /socket/websocketx HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", // another path
		"GET /socket/web",
		"POST /socket/websocket HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", // pipelined, not ours
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nBad Header\r\n\r\n",
		"GET /socket/websocket HTTP/1.1\r\nHost: x\r\n Upgrade: websocket\r\n\r\n", // continuation line
		"GET /socket/websocket HTTP/9.9\r\nUpgrade: websocket\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", // a TLS ClientHello on the plain port
	}
	out := make([]frameSeed, 0, 2*len(seeds))
	for _, s := range seeds {
		out = append(out, frameSeed{[]byte(s), nil}, frameSeed{[]byte(s), []byte{0, 2, 1}})
	}
	return out
}
