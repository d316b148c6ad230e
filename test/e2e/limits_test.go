package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// Handshakes sent at a crawl are cut at the handshake deadline while
// healthy clients still connect.
func TestSlowHandshakesAreCut(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.HandshakeTimeout = time.Second })
	var slow []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", f.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n")
		slow = append(slow, c)
	}
	healthy := f.dial(phoenix.V2, phxclient.Options{})
	joinPos(t, healthy, "room:ok", nil)
	start := time.Now()
	for _, c := range slow {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("slow handshake not closed: %v", err)
		}
	}
	if el := time.Since(start); el > 8*time.Second {
		t.Fatalf("slow handshakes held for %v", el)
	}
}

// Headers over the limit get 431 before anything is parsed further.
func TestOversizedHeaders(t *testing.T) {
	f := startFabric(t, nil)
	c, err := net.Dial("tcp", f.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 431 {
		t.Fatalf("64 KiB header: %v %v", resp, err)
	}
}

// Pushes over the rate get rate_limited with retry_after_ms; the channel's
// other member keeps receiving.
func TestPushRateLimit(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.PushRate = 5 })
	spammer := f.dial(phoenix.V2, phxclient.Options{})
	other := f.dial(phoenix.V2, phxclient.Options{})
	jr, _ := spammer.Join("chat:x", nil)
	spammer.WaitReply(jr, wait)
	joinRef := phoenix.R(jr)
	if s, _, err := other.JoinWait("chat:x", nil, wait); s != "ok" || err != nil {
		t.Fatal(s, err)
	}
	limited, ok := 0, 0
	for i := 0; i < 30; i++ {
		ref := spammer.NextRef()
		spammer.Send(joinRef, phoenix.R(ref), "chat:x", "spam", map[string]int{"i": i})
		status, resp, err := spammer.WaitReply(ref, wait)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case status == "ok":
			ok++
		case strings.Contains(string(resp), `"reason":"rate_limited","retry_after_ms":`):
			limited++
		}
	}
	if limited == 0 || ok == 0 {
		t.Fatalf("ok %d, limited %d", ok, limited)
	}
	// Every accepted push reached the other member.
	for i := 0; i < ok; i++ {
		if _, err := other.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "spam" }); err != nil {
			t.Fatalf("other member got %d of %d: %v", i, ok, err)
		}
	}
}

// Upgrades in progress are capped: with one handshake stuck on a slow key
// lookup, the next is answered 503 + Retry-After at once.
func TestPendingHandshakesCap(t *testing.T) {
	slowJWKS := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer slowJWKS.Close()
	f := startFabric(t, func(c *app.Config) {
		c.JWKSURL = slowJWKS.URL
		c.AllowQueryToken = true
		c.MaxPendingHandshakes = 1
	})
	// A well-formed RS256-looking token with a kid: its verification waits
	// for the JWKS (up to the lookup timeout).
	tok := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.c2ln"
	first := make(chan int, 1)
	go func() {
		r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0&token="+tok, nil)
		first <- r.StatusCode
	}()
	eventually(t, wait, "first handshake pending", func() bool { return f.Gateway().PendingHandshakes() == 1 })
	r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0&token="+tok, nil)
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second handshake: %d %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if code := <-first; code != 401 {
		t.Fatalf("first handshake ended with %d, want 401 after the lookup timed out", code)
	}
}

// A wave of --max-accept-burst upgrades is admitted at once, however low
// the rate; the next one is refused 503 + Retry-After: 1 (the rate, one
// token every 100 s, gives none back during the test).
func TestAcceptBurstAdmitsWave(t *testing.T) {
	const burst = 20
	f := startFabric(t, func(c *app.Config) { c.MaxAcceptRate, c.MaxAcceptBurst = 0.01, burst })
	for i := 0; i < burst; i++ {
		if r := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0", nil); r.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade %d of a wave of %d: %d", i+1, burst, r.StatusCode)
		}
	}
	over := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0", nil)
	if over.StatusCode != http.StatusServiceUnavailable || over.Header.Get("Retry-After") != "1" {
		t.Fatalf("upgrade after the burst: %d Retry-After %q, want 503 and 1", over.StatusCode, over.Header.Get("Retry-After"))
	}
	if got := f.Gateway().Stats().Refused["accept_rate"]; got != 1 {
		t.Fatalf("Stats().Refused[accept_rate] = %d, want 1", got)
	}
}

// New connections over --max-accept-rate are answered 503 + Retry-After: 1
// before the upgrade and counted as fabric_connections_refused_total
// {cause="accept_rate"}. A bucket of one token (MaxAcceptBurst unset: the
// rate's one second, at least 1) refilled once every 100 s:
// the second upgrade right after the first is refused whatever the timing.
func TestAcceptRateLimit(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.MaxAcceptRate = 0.01 })
	refused := func() string {
		_, body := httpGet(t, "http://"+f.OpsAddr()+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, `fabric_connections_refused_total{cause="accept_rate"} `) {
				return strings.TrimPrefix(line, `fabric_connections_refused_total{cause="accept_rate"} `)
			}
		}
		return "missing"
	}
	if got := refused(); got != "0" {
		t.Fatalf("accept_rate refusals before any connection: %s", got)
	}
	first := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0", nil)
	if first.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first upgrade: %d", first.StatusCode)
	}
	second := upgrade(t, f.HTTPAddr(), "/socket/websocket?vsn=2.0.0", nil)
	if second.StatusCode != http.StatusServiceUnavailable || second.Header.Get("Retry-After") != "1" {
		t.Fatalf("second upgrade: %d Retry-After %q, want 503 and 1", second.StatusCode, second.Header.Get("Retry-After"))
	}
	if body, _ := io.ReadAll(second.Body); !strings.Contains(string(body), `"reason":"overloaded"`) {
		t.Fatalf("second upgrade body: %s", body)
	}
	// A new LongPoll session is a new connection too (refused the
	// LongPoll way: 200 with status 403, as for every refused session).
	if code, body := httpGet(t, "http://"+f.HTTPAddr()+"/socket/longpoll?vsn=2.0.0"); code != http.StatusOK || !strings.Contains(body, `"status":403`) {
		t.Fatalf("LongPoll session over the accept rate: %d %s", code, body)
	}
	if got := f.Gateway().Stats().Refused["accept_rate"]; got != 2 {
		t.Fatalf("Stats().Refused[accept_rate] = %d, want 2", got)
	}
	if got := refused(); got != "2" {
		t.Fatalf(`fabric_connections_refused_total{cause="accept_rate"} = %s, want 2`, got)
	}
}
