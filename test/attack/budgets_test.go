package attack

// Findings 4-7 of issue 21, tried as an attacker would against a real
// `fabric serve` process started with its default budgets: one ordinary
// user's token (channels room:*), and clients with bad tokens or none.
// Each test asserts the documented bound (docs/limits.md) and logs the
// server's RSS and CPU before and after the scenario.
//
// ATTACK_FABRIC_BIN runs the scenarios against another build (e.g. the
// code before these budgets) to compare the numbers; the tests fail there.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/bench"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// The defaults these tests hold the server to (cmd/fabric/serve.go,
// docs/limits.md).
const (
	budConnsPerUser    = 100
	budChannelsPerUser = 1000
	budLongPollPerUser = 10
	budHistoryMemory   = 64 << 20
	budStreamMaxBytes  = 1 << 30
)

var budSecret = strings.Repeat("attack-secret-", 3)

// budServer is one `fabric serve` child process.
type budServer struct {
	t        *testing.T
	cmd      *exec.Cmd
	addr     string // client listener
	ops      string
	natsAddr string
	stderr   *budLog
}

// budLog collects the child's log lines.
type budLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *budLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines contain s.
func (l *budLog) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// budBinary is cmd/fabric, built once per test process (or ATTACK_FABRIC_BIN).
func budBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("ATTACK_FABRIC_BIN"); bin != "" {
		return bin
	}
	return proctest.FabricBinary(t)
}

// budStart runs `fabric serve` with its defaults plus args, with JWT
// authentication unless anonymous.
func budStart(t *testing.T, bin string, anonymous bool, args ...string) *budServer {
	t.Helper()
	s := &budServer{t: t, addr: proctest.FreeAddrOn(t, "127.0.0.1"), ops: proctest.FreeAddrOn(t, "127.0.0.1"),
		natsAddr: proctest.FreeAddrOn(t, "127.0.0.1"), stderr: &budLog{}}
	all := append([]string{"serve", "--listen", s.addr, "--ops-listen", s.ops, "--nats-listen", s.natsAddr,
		"--data-dir", t.TempDir(), "--log-format", "json"}, args...)
	s.cmd = exec.Command(bin, all...)
	s.cmd.Env = proctest.Env()
	if !anonymous {
		s.cmd.Env = append(s.cmd.Env, "FABRIC_JWT_SECRET="+budSecret)
	}
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := http.Get("http://" + s.ops + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fabric serve not ready after 60 s; log:\n%s", s.stderr.buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// budUsage is a process's resident memory and CPU time so far.
type budUsage struct {
	rss int64 // bytes
	cpu time.Duration
}

func (s *budServer) usage() budUsage {
	s.t.Helper()
	pid := s.cmd.Process.Pid
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		s.t.Fatal(err)
	}
	var u budUsage
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			u.rss = kb << 10
		}
	}
	if u.cpu, err = bench.CPUTime(pid); err != nil {
		s.t.Fatal(err)
	}
	return u
}

// report logs what a scenario cost the server.
func (s *budServer) report(scenario string, before budUsage) {
	s.t.Helper()
	after := s.usage()
	s.t.Logf("%s: server RSS %.1f -> %.1f MB, CPU %.2f s", scenario,
		float64(before.rss)/(1<<20), float64(after.rss)/(1<<20), (after.cpu - before.cpu).Seconds())
}

// metric returns the value of one /metrics sample ("name{labels}"), -1 if
// absent.
func (s *budServer) metric(sample string) float64 {
	s.t.Helper()
	r, err := http.Get("http://" + s.ops + "/metrics")
	if err != nil {
		s.t.Fatal(err)
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

func budToken(t *testing.T, sub string, channels, publish []string) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(budSecret)}, auth.MintClaims{Subject: sub, Channels: channels, Publish: publish})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// budDial opens a WebSocket with tok from localIP; it returns the client or
// the HTTP status of the refusal.
func (s *budServer) budDial(tok, localIP string) (*phxclient.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws://" + s.addr + "/socket/websocket?vsn=2.0.0"
	if tok != "" {
		u += "&token=" + url.QueryEscape(tok)
	}
	return phxclient.Dial(ctx, u, phoenix.V2, phxclient.Options{LocalIP: localIP})
}

// budUpgrade sends one raw upgrade request and returns the status.
func budUpgrade(addr, localIP, query string, header map[string]string) (int, string, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET /socket/websocket?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n", query, addr)
	for k, v := range header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(c, b.String()); err != nil {
		return 0, "", err
	}
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	body := ""
	if r.StatusCode != http.StatusSwitchingProtocols {
		bb, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		body = string(bb)
	}
	return r.StatusCode, body, nil
}

// budLongPoll is one LongPoll request; it returns the HTTP status, the
// {"status","token"} answer and the response headers.
func budLongPoll(cl *http.Client, method, u string, header map[string]string) (int, int, string, http.Header, error) {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return 0, 0, "", nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	r, err := cl.Do(req)
	if err != nil {
		return 0, 0, "", nil, err
	}
	defer r.Body.Close()
	var p struct {
		Status int    `json:"status"`
		Token  string `json:"token"`
	}
	b, _ := io.ReadAll(r.Body)
	json.Unmarshal(b, &p)
	return r.StatusCode, p.Status, p.Token, r.Header, nil
}

func budClientFrom(localIP string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// Finding 4: one room:* token opening connection after connection and
// joining topic after topic. It gets budConnsPerUser connections and
// budChannelsPerUser channels on the gateway, however many it asks for;
// its large pushes to those channels are paced per connection, the
// channels' rings of recent messages stay within --history-memory, and the
// stream has a byte limit.
func TestBudgetTopicsPerUser(t *testing.T) {
	s := budStart(t, budBinary(t), false)
	tok := budToken(t, "mallory", []string{"room:*"}, []string{"room:*"})
	before := s.usage()

	const conns, perConn = budConnsPerUser + 20, 12
	var clients []*phxclient.Client
	refused := 0
	for range conns {
		c, err := s.budDial(tok, "127.0.0.1")
		if err != nil {
			refused++
			continue
		}
		clients = append(clients, c)
	}
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	if len(clients) != budConnsPerUser || refused != conns-budConnsPerUser {
		t.Errorf("one user opened %d of %d connections (%d refused), want %d", len(clients), conns, refused, budConnsPerUser)
	}
	if n := s.metric(`fabric_connections_refused_total{cause="per_user"}`); n != float64(conns-budConnsPerUser) {
		t.Errorf(`fabric_connections_refused_total{cause="per_user"} = %v, want %d`, n, conns-budConnsPerUser)
	}

	// Every connection joins perConn topics of its own: 1,200 asked for.
	var ok, overBudget, other atomic.Int64
	joined := make([][]string, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			refs := make([]string, perConn)
			topics := make([]string, perConn)
			for j := range perConn {
				topics[j] = fmt.Sprintf("room:m%d-%d", i, j)
				refs[j], _ = c.Join(topics[j], nil)
			}
			for j, ref := range refs {
				status, resp, err := c.WaitReply(ref, 30*time.Second)
				switch {
				case err == nil && status == "ok":
					ok.Add(1)
					joined[i] = append(joined[i], topics[j])
				case err == nil && strings.Contains(string(resp), "too many channels joined by user"):
					overBudget.Add(1)
				default:
					other.Add(1)
					t.Logf("join %s: %s %s %v", topics[j], status, resp, err)
				}
			}
		}()
	}
	wg.Wait()
	s.report(fmt.Sprintf("%d connections x %d topics asked by one token (%d joined)", conns, perConn, ok.Load()), before)
	if ok.Load() != budChannelsPerUser || overBudget.Load() != int64(len(clients)*perConn-budChannelsPerUser) || other.Load() != 0 {
		t.Errorf("joins: %d ok, %d over the user's budget, %d other; want exactly %d ok", ok.Load(), overBudget.Load(), other.Load(), budChannelsPerUser)
	}
	if n := s.metric(`fabric_joins_total{result="user_budget"}`); n != float64(overBudget.Load()) {
		t.Errorf(`fabric_joins_total{result="user_budget"} = %v, want %d`, n, overBudget.Load())
	}

	// 32 KB pushes, 20 per connection at once, to its own topics: the
	// byte budget (64 KiB/s, burst 256 KiB) lets about eight through.
	before = s.usage()
	payload := json.RawMessage(`{"b":"` + strings.Repeat("x", 32<<10) + `"}`)
	var accepted, limited atomic.Int64
	for i, c := range clients {
		if len(joined[i]) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var refs []string
			for k := range 20 {
				ref := c.NextRef()
				topic := joined[i][k%len(joined[i])]
				if c.Send(phoenix.Null, phoenix.R(ref), topic, "big", payload) == nil {
					refs = append(refs, ref)
				}
			}
			for _, ref := range refs {
				status, resp, err := c.WaitReply(ref, 30*time.Second)
				switch {
				case err == nil && status == "ok":
					accepted.Add(1)
				case err == nil && strings.Contains(string(resp), "rate_limited"):
					limited.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	s.report(fmt.Sprintf("20 pushes of 32 KB per connection (%d accepted, %d rate limited)", accepted.Load(), limited.Load()), before)
	if limited.Load() == 0 {
		t.Errorf("no 32 KB push was rate limited (%d accepted)", accepted.Load())
	}
	// The burst (256 KiB = 8 pushes) plus what 64 KiB/s refills in the
	// generous 30 s the test could have taken.
	if max := int64(len(clients)) * (8 + 30*2); accepted.Load() > max {
		t.Errorf("%d pushes of 32 KB accepted, over the byte budget's %d", accepted.Load(), max)
	}
	if ring := s.metric("fabric_history_memory_bytes"); ring < 0 || ring > budHistoryMemory*9/8+budChannelsPerUser*(3*(32<<10)+512) {
		t.Errorf("fabric_history_memory_bytes = %v, over the budget", ring)
	}

	nc, err := nats.Connect("nats://" + s.natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "FABRIC_room")
	if err != nil {
		t.Fatal(err)
	}
	if mb := st.CachedInfo().Config.MaxBytes; mb != budStreamMaxBytes {
		t.Errorf("stream FABRIC_room max_bytes %d, want %d", mb, budStreamMaxBytes)
	}
}

// Finding 5: three clients with bad tokens flood the gateway (WebSocket
// upgrades on fresh connections, LongPoll opens on keep-alive ones) from
// 127.0.0.2 while valid clients keep connecting from 127.0.0.1: every
// valid client gets in, the refusals are counted, and the log gets a few
// sampled lines instead of one per attempt.
func TestBudgetBadTokensDoNotStarveValidClients(t *testing.T) {
	// A small accept budget, so that spending it on bad tokens shows.
	s := budStart(t, budBinary(t), false, "--max-accept-rate", "40")
	before := s.usage()
	bad := budToken(t, "x", []string{"room:*"}, nil)
	bad = bad[:len(bad)-4] + "AAAA" // a forged signature

	stop := make(chan struct{})
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := budClientFrom("127.0.0.2")
			defer cl.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i == 2 {
					budLongPoll(cl, http.MethodGet, "http://"+s.addr+"/socket/longpoll?vsn=2.0.0&token="+url.QueryEscape(bad), nil)
				} else {
					budUpgrade(s.addr, "127.0.0.2", "vsn=2.0.0&token="+url.QueryEscape(bad), nil)
				}
				attempts.Add(1)
			}
		}()
	}
	// Let the flood start before the first valid client.
	for deadline := time.Now().Add(10 * time.Second); attempts.Load() < 200 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	const valid = 20
	var failed []string
	for i := range valid {
		tok := budToken(t, fmt.Sprintf("valid-%d", i), []string{"room:*"}, nil)
		status, body, err := budUpgrade(s.addr, "127.0.0.1", "vsn=2.0.0&token="+url.QueryEscape(tok), nil)
		if err != nil || status != http.StatusSwitchingProtocols {
			failed = append(failed, fmt.Sprintf("%d %s %v", status, body, err))
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	s.report(fmt.Sprintf("%d bad-token attempts while %d valid clients connected", attempts.Load(), valid), before)
	if len(failed) > 0 {
		t.Fatalf("%d of %d valid clients refused during the flood: %v", len(failed), valid, failed)
	}
	authRefused := s.metric(`fabric_connections_refused_total{cause="auth"}`)
	throttled := s.metric(`fabric_connections_refused_total{cause="auth_rate"}`)
	if authRefused <= 0 || throttled <= 0 || authRefused+throttled < float64(attempts.Load())/2 {
		t.Fatalf("refusals counted: auth %v, auth_rate %v, for %d attempts", authRefused, throttled, attempts.Load())
	}
	// Sampled: at most one line per kind every 10 s (the test runs well
	// under a minute), never one per attempt.
	n := s.stderr.count(`connection refused`)
	t.Logf("%d refusal log lines for %d attempts", n, attempts.Load())
	if n > 12 {
		t.Fatalf("%d refusal log lines for %d attempts: not sampled", n, attempts.Load())
	}
}

// Finding 6: one token opening LongPoll sessions it never polls, each
// joined to one busy room (its presence diffs then pile up in every
// session's buffer). It gets budLongPollPerUser sessions; an unpolled one
// buffers at most 64 KiB and ends after the first-poll timeout (5 s)
// rather than the 15 s idle timeout.
func TestBudgetLongPollSessionsPerUser(t *testing.T) {
	s := budStart(t, budBinary(t), false)
	tok := budToken(t, "mallory", []string{"room:*"}, nil)
	before := s.usage()
	cl := budClientFrom("127.0.0.1")
	const asked = 1000
	opened, refused := 0, 0
	lp := "http://" + s.addr + "/socket/longpoll?vsn=2.0.0&token=" + url.QueryEscape(tok)
	for i := range asked {
		_, status, sess, _, err := budLongPoll(cl, http.MethodGet, lp, nil)
		switch {
		case err != nil:
			t.Fatal(err)
		case status == 410:
			opened++
			join := fmt.Sprintf(`["1","1","room:lobby","phx_join",{"meta":{"n":%d,"pad":%q}}]`, i, strings.Repeat("p", 200))
			req, _ := http.NewRequest(http.MethodPost, lp+"&token="+url.QueryEscape(sess), strings.NewReader(join))
			req.Header.Set("Content-Type", "application/x-ndjson")
			if r, err := cl.Do(req); err == nil {
				io.Copy(io.Discard, r.Body)
				r.Body.Close()
			}
		case status == 403:
			refused++
		}
	}
	s.report(fmt.Sprintf("%d LongPoll sessions asked by one token (%d opened), each joined to room:lobby, never polled", asked, opened), before)
	if opened != budLongPollPerUser || refused != asked-budLongPollPerUser {
		t.Fatalf("one user opened %d LongPoll sessions (%d refused), want %d", opened, refused, budLongPollPerUser)
	}
	if n := s.metric(`fabric_connections_refused_total{cause="per_user"}`); n != asked-budLongPollPerUser {
		t.Fatalf(`fabric_connections_refused_total{cause="per_user"} = %v, want %d`, n, asked-budLongPollPerUser)
	}
	start := time.Now()
	for s.metric("fabric_longpoll_sessions") != 0 {
		if time.Since(start) > 12*time.Second {
			t.Fatalf("never-polled sessions still open after %v (first-poll timeout 5 s, idle timeout 15 s)", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Their budget is free again.
	if _, status, _, _, _ := budLongPoll(cl, http.MethodGet, lp, nil); status != 410 {
		t.Fatalf("new session after the old ones ended: status %d", status)
	}
}

// Finding 7: a connection token must name its user; a LongPoll session
// token works only with its user's credentials; an anonymous server takes
// only same-origin browser requests and never echoes another Origin.
func TestBudgetTokensBoundToUsers(t *testing.T) {
	bin := budBinary(t)
	s := budStart(t, bin, false, "--longpoll-window", "1s")
	noSub := budToken(t, "", []string{"room:*"}, nil)
	if status, body, err := budUpgrade(s.addr, "127.0.0.1", "vsn=2.0.0&token="+url.QueryEscape(noSub), nil); err != nil || status != 401 || !strings.Contains(body, "missing_sub") {
		t.Fatalf("token without sub: %d %s %v, want 401 missing_sub", status, body, err)
	}
	cl := budClientFrom("127.0.0.1")
	lp := "http://" + s.addr + "/socket/longpoll?vsn=2.0.0"
	if _, status, _, _, err := budLongPoll(cl, http.MethodGet, lp+"&token="+url.QueryEscape(noSub), nil); err != nil || status != 403 {
		t.Fatalf("LongPoll with a token without sub: status %d %v", status, err)
	}

	alice := budToken(t, "alice", []string{"room:*"}, nil)
	bob := budToken(t, "bob", []string{"room:*"}, nil)
	_, status, sess, _, err := budLongPoll(cl, http.MethodGet, lp, map[string]string{"X-Phoenix-AuthToken": alice})
	if err != nil || status != 410 || sess == "" {
		t.Fatalf("alice's LongPoll open: %d %v", status, err)
	}
	withSess := lp + "&token=" + url.QueryEscape(sess)
	// Bob holding alice's session token: refused with his own valid token.
	if code, status, _, _, _ := budLongPoll(cl, http.MethodGet, withSess, map[string]string{"X-Phoenix-AuthToken": bob}); code != 403 || status != 403 {
		t.Fatalf("bob polling alice's session: HTTP %d status %d, want 403", code, status)
	}
	if code, status, _, _, _ := budLongPoll(cl, http.MethodPost, lp+"&token="+url.QueryEscape(bob)+"&token="+url.QueryEscape(sess), nil); code != 403 || status != 403 {
		t.Fatalf("bob posting to alice's session: HTTP %d status %d, want 403", code, status)
	}
	// Alice's own poll goes on (204 after the poll window).
	if _, status, _, _, err := budLongPoll(cl, http.MethodGet, withSess, map[string]string{"X-Phoenix-AuthToken": alice}); err != nil || status != 204 {
		t.Fatalf("alice polling her session: status %d %v", status, err)
	}

	out, err := exec.Command(bin, "token", "--sub", "", "--channels", "room:*", "--jwt-secret", budSecret).CombinedOutput()
	if err == nil {
		t.Fatalf("fabric token --sub \"\" minted a token: %s", out)
	}

	// Anonymous mode: another site's page is refused, on both transports.
	anon := budStart(t, bin, true)
	evil := map[string]string{"Origin": "https://evil.example"}
	if status, body, _ := budUpgrade(anon.addr, "127.0.0.1", "vsn=2.0.0", evil); status != 403 {
		t.Fatalf("anonymous WebSocket from another origin: %d %s, want 403", status, body)
	}
	code, _, _, h, err := budLongPoll(cl, http.MethodGet, "http://"+anon.addr+"/socket/longpoll?vsn=2.0.0", evil)
	if err != nil || code != 403 || h.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("anonymous LongPoll from another origin: HTTP %d, Access-Control-Allow-Origin %q, %v", code, h.Get("Access-Control-Allow-Origin"), err)
	}
	same := map[string]string{"Origin": "http://" + anon.addr}
	if status, body, _ := budUpgrade(anon.addr, "127.0.0.1", "vsn=2.0.0", same); status != 101 {
		t.Fatalf("anonymous WebSocket from its own origin: %d %s", status, body)
	}
	if _, status, _, _, _ := budLongPoll(cl, http.MethodGet, "http://"+anon.addr+"/socket/longpoll?vsn=2.0.0", same); status != 410 {
		t.Fatalf("anonymous LongPoll from its own origin: status %d", status)
	}
}
