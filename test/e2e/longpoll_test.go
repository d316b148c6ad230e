package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// The real phoenix client over LongPoll only: join, JSON and binary
// broadcasts, push with reply, leave.
func TestPhoenixJSOverLongPoll(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, map[string]any{"longpoll": true}); err != nil {
		t.Fatal(err)
	}
	if st := p.State(); st.Transport != "longpoll" {
		t.Fatalf("transport %q", st.Transport)
	}
	if s, resp := p.Join("room:lp", nil); s != "ok" || !bytes.Contains(resp, []byte(`"epoch"`)) {
		t.Fatalf("join: %s %s", s, resp)
	}
	f.publish("fabric.room.lp", "news", []byte(`{"body":"over longpoll"}`))
	if e := p.MustNext(wait, "news", phxnode.IsMsg("room:lp", "news")); string(e.Payload) != `{"body":"over longpoll"}` || e.RefString() == "" {
		t.Fatalf("json broadcast: %s", e)
	}
	// LongPoll carries no binary frames to the client: a binary body
	// arrives as {"base64": …}, with its offset in the ref slot.
	f.publish("fabric.room.lp", "blob", []byte{0, 1, 2, 255})
	e := p.MustNext(wait, "blob", phxnode.IsMsg("room:lp", "blob"))
	var b64 struct{ Base64 string }
	json.Unmarshal(e.Payload, &b64)
	if got, _ := base64.StdEncoding.DecodeString(b64.Base64); !bytes.Equal(got, []byte{0, 1, 2, 255}) || e.Binary || e.RefString() == "" {
		t.Fatalf("binary over longpoll: %s", e)
	}
	if s, resp := p.Push("room:lp", "shout", map[string]any{"x": 1}); s != "ok" || !bytes.Contains(resp, []byte(`"offset"`)) {
		t.Fatalf("push: %s %s", s, resp)
	}
	p.MustNext(wait, "own push", phxnode.IsMsg("room:lp", "shout"))
	// A binary push (base64 line in the ndjson POST) is accepted too.
	if s, _ := p.Push("room:lp", "bin", []byte{9, 9}); s != "ok" {
		t.Fatalf("binary push: %s", s)
	}
	p.Leave("room:lp")
	eventually(t, wait, "member gone", func() bool { return f.Gateway().Members("room:lp") == 0 })
}

// A LongPoll session that expires (the client was away) is resumed by
// offset on the next session with nothing lost.
func TestLongPollSessionExpiryResumes(t *testing.T) {
	f := startFabric(t, func(c *app.Config) {
		c.LongPollWindow = 500 * time.Millisecond
		c.LongPollIdleTimeout = 750 * time.Millisecond
	})
	p := phxnode.Start(t)
	opts := map[string]any{"longpoll": true, "reconnectAfterMs": 100, "rejoinAfterMs": 100}
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	if res := p.JoinOpts("room:lpr", nil, map[string]any{"resumable": true}); res.Status != "ok" {
		t.Fatalf("join: %+v", res)
	}
	n := 0
	pub := func(k int) {
		for ; k > 0; k-- {
			f.publish("fabric.room.lpr", "m", []byte(fmt.Sprintf(`{"i":%d}`, n)))
			n++
		}
	}
	pub(3)
	contiguous(t, msgIs(t, collectMsgs(t, p, "room:lpr", "m", 3)), 0)
	p.Disconnect(0, "")
	pub(100)
	// The server ends the abandoned session.
	eventually(t, wait, "session expired", func() bool { return f.Gateway().Stats().LongPoll.Sessions == 0 })
	if err := p.Connect(f.socketURL(), nil, opts); err != nil {
		t.Fatal(err)
	}
	contiguous(t, msgIs(t, collectMsgs(t, p, "room:lpr", "m", 100)), 3)
	if gaps := p.Drain(phxnode.IsEv("gap")); len(gaps) > 0 {
		t.Fatalf("gap: %v", gaps)
	}
}

// phoenix.js's longPollFallbackMs: with the WebSocket endpoint blocked the
// client lands on LongPoll and keeps receiving.
func TestLongPollFallback(t *testing.T) {
	f := startFabric(t, nil)
	target, _ := url.Parse("http://" + f.HTTPAddr())
	proxy := httputil.NewSingleHostReverseProxy(target)
	blocked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/websocket") {
			http.Error(w, "blocked by a corporate proxy", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer blocked.Close()
	p := phxnode.Start(t)
	url := "ws" + strings.TrimPrefix(blocked.URL, "http") + "/socket"
	if err := p.Connect(url, nil, map[string]any{"longPollFallbackMs": 500}); err != nil {
		t.Fatal(err)
	}
	eventually(t, wait, "fell back to LongPoll", func() bool { return p.State().Transport == "longpoll" })
	if s, _ := p.Join("room:fb", nil); s != "ok" {
		t.Fatalf("join after fallback: %s", s)
	}
	f.publish("fabric.room.fb", "hello", []byte(`{"via":"longpoll"}`))
	p.MustNext(wait, "message after fallback", phxnode.IsMsg("room:fb", "hello"))
}

// A LongPoll POST from an origin not on the allow-list is refused, and a
// tampered session token never reaches anyone's session.
func TestLongPollBadInput(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.AllowedOrigins = []string{"https://app.example.com"} })
	base := "http://" + f.HTTPAddr() + "/socket/longpoll?vsn=2.0.0"
	req, _ := http.NewRequest("POST", base+"&token=lp1.x.y", strings.NewReader(`[null,"1","phoenix","heartbeat",{}]`))
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("evil origin POST: %d", resp.StatusCode)
	}
	// Open a session, then tamper with its token.
	resp, err = http.Get(base)
	if err != nil {
		t.Fatal(err)
	}
	var open struct {
		Status int
		Token  string
	}
	json.NewDecoder(resp.Body).Decode(&open)
	resp.Body.Close()
	if open.Status != 410 || open.Token == "" {
		t.Fatalf("open: %+v", open)
	}
	tampered := open.Token[:len(open.Token)-2] + "AA"
	resp, err = http.Post(base+"&token="+tampered, "application/x-ndjson", strings.NewReader(`[null,"1","phoenix","heartbeat",{}]`))
	if err != nil {
		t.Fatal(err)
	}
	var post struct{ Status int }
	json.NewDecoder(resp.Body).Decode(&post)
	resp.Body.Close()
	if post.Status == 200 {
		t.Fatal("a tampered session token was accepted")
	}
}
