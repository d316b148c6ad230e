package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

const wait = 10 * time.Second

// v1 JSON clients: object frames, no join_ref, binary bodies as base64.
func TestV1Client(t *testing.T) {
	f := startFabric(t, nil)
	c := f.dial(phoenix.V1, phxclient.Options{})
	status, _, err := c.JoinWait("room:v1", map[string]any{}, wait)
	if err != nil || status != "ok" {
		t.Fatalf("join: %s %v", status, err)
	}
	ref := c.NextRef()
	c.Send(phoenix.Null, phoenix.R(ref), "phoenix", "heartbeat", map[string]any{})
	if s, _, err := c.WaitReply(ref, wait); err != nil || s != "ok" {
		t.Fatalf("heartbeat: %s %v", s, err)
	}
	f.publish("fabric.room.v1", "new_msg", []byte(`{"body":"hi"}`))
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "new_msg" })
	// room:* keeps history by default, so the ref slot carries the offset.
	if err != nil || m.Topic != "room:v1" || string(m.Payload) != `{"body":"hi"}` || !m.Ref.Valid || m.Ref.S == "" {
		t.Fatalf("v1 broadcast: %+v %v", m, err)
	}
	f.publish("fabric.room.v1", "blob", []byte{1, 2, 3})
	m, err = c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "blob" })
	if err != nil || m.Binary {
		t.Fatalf("v1 binary: %+v %v", m, err)
	}
	var b64 struct{ Base64 string }
	json.Unmarshal(m.Payload, &b64)
	if got, _ := base64.StdEncoding.DecodeString(b64.Base64); !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("v1 base64 payload %s", m.Payload)
	}
	// A binary frame to the v1 JSON serializer closes with 1003.
	c.WriteFrame(ws.OpBinary, []byte{0, 0, 0, 0, 0})
	m, err = c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close })
	if err != nil || m.CloseCode != 1003 {
		t.Fatalf("binary to v1: %+v %v", m, err)
	}
}

// Server-side duplicate join (no leave in between): the old instance gets
// phx_close with its join_ref, the new join is answered, and each message
// arrives once.
func TestDuplicateJoinLeavesOneDeliveryPath(t *testing.T) {
	f := startFabric(t, nil)
	c := f.dial(phoenix.V2, phxclient.Options{})
	first, _ := c.Join("room:dup", nil)
	if s, _, err := c.WaitReply(first, wait); s != "ok" || err != nil {
		t.Fatalf("first join: %s %v", s, err)
	}
	second, _ := c.Join("room:dup", nil)
	closeMsg, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == phoenix.EventClose })
	if err != nil || closeMsg.JoinRef.S != first || closeMsg.Ref.S != first {
		t.Fatalf("old instance close: %+v %v", closeMsg, err)
	}
	if s, _, err := c.WaitReply(second, wait); s != "ok" || err != nil {
		t.Fatalf("second join: %s %v", s, err)
	}
	f.publish("fabric.room.dup", "once", []byte(`{}`))
	f.publish("fabric.room.dup", "marker", []byte(`{}`))
	if _, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "marker" }); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := c.NextMatch(0, func(m phxclient.Msg) bool { return m.Event == "once" }); err != nil {
			break
		}
		n++
	}
	if n != 1 {
		t.Fatalf("%d deliveries, want 1", n)
	}
}

// Bad input after the upgrade gets an error reply and keeps the connection
// (docs/configuration.md, errors a client can see) or the documented close code.
func TestBadInputAfterUpgrade(t *testing.T) {
	f := startFabric(t, nil)
	c := f.dial(phoenix.V2, phxclient.Options{})

	reply := func(raw string, ref string) (string, string) {
		t.Helper()
		c.WriteFrame(ws.OpText, []byte(raw))
		m, err := c.NextMatch(wait, func(m phxclient.Msg) bool {
			return m.Close || (m.Event == phoenix.EventReply && m.Ref.S == ref)
		})
		if err != nil || m.Close {
			t.Fatalf("%s: no reply (%+v, %v)", raw, m, err)
		}
		var r struct {
			Status   string
			Response struct{ Reason string }
		}
		json.Unmarshal(m.Payload, &r)
		return r.Status, r.Response.Reason
	}
	cases := []struct{ raw, ref, status, reason string }{
		{`["1","1","room:never","new_msg",{}]`, "1", "error", "unmatched topic"},
		{`["2","2","room:x","new_msg"]`, "2", "error", "bad_request"}, // 4 elements
		{`["3","3","room:x",42,{}]`, "3", "error", "bad_request"},     // event not a string
		{`["4","4","room:*","phx_join",{}]`, "4", "error", "invalid_topic"},
		{`["5","5","room:","phx_join",{}]`, "5", "error", "invalid_topic"},            // empty segment
		{`["6","6","room:>","phx_join",{}]`, "6", "error", "invalid_topic"},           // wildcard segment
		{`["7","7","room:\r\nPUB x 1","phx_join",{}]`, "7", "error", "invalid_topic"}, // control characters
		{`["8","8","` + "room:" + strings.Repeat("a", 300) + `","phx_join",{}]`, "8", "error", "invalid_topic"},
		{`["9","9","room:ok","phx_join","not an object"]`, "9", "error", "bad_request"},
		{`["10","10","room:ok","phx_leave",{}]`, "10", "ok", ""}, // leave of a never-joined topic is ok
		{`[null,"11","phoenix","heartbeat",{}]`, "11", "ok", ""},
	}
	for _, tc := range cases {
		status, reason := reply(tc.raw, tc.ref)
		if status != tc.status || reason != tc.reason {
			t.Errorf("%s: got %s/%q, want %s/%q", tc.raw, status, reason, tc.status, tc.reason)
		}
	}
	// Dotted and spaced topics are escaped, not refused
	// (docs/channels.md): they map to single tokens, never to separators.
	for _, topic := range []string{"room:a.b", "room: a"} {
		if s, _, err := c.JoinWait(topic, nil, wait); s != "ok" || err != nil {
			t.Fatalf("join %q: %s %v", topic, s, err)
		}
	}
	if n := f.interest("fabric_live.room.a=2Eb"); n != 1 {
		t.Fatalf("room:a.b → fabric.room.a=2Eb: %d subscriptions", n)
	}
	if n := f.interest("fabric_live.room.a.b"); n != 0 {
		t.Fatalf("room:a.b created a separator: %d subscriptions on fabric.room.a.b", n)
	}
	// JSON from which nothing can be attributed closes with 1007.
	c.WriteFrame(ws.OpText, []byte(`{"not":"an array"}`))
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close })
	if err != nil || m.CloseCode != 1007 {
		t.Fatalf("undecodable frame: %+v %v", m, err)
	}
}

// Refusals before the upgrade carry an HTTP status.
func TestHandshakeRefusals(t *testing.T) {
	f := startFabric(t, nil)
	_, _, _, err := ws.Dial(context.Background(), f.wsURL("3.0.0"))
	var se ws.StatusError
	if !errors.As(err, &se) || int(se) != http.StatusBadRequest {
		t.Fatalf("vsn 3.0.0: %v", err)
	}
	// No vsn means 1.0.0, like Phoenix.
	c, _, _, err := ws.Dial(context.Background(), fmt.Sprintf("ws://%s/socket/websocket", f.HTTPAddr()))
	if err != nil {
		t.Fatalf("no vsn: %v", err)
	}
	c.Close()
	if code, _ := httpGet(t, "http://"+f.OpsAddr()+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	code, body := httpGet(t, "http://"+f.OpsAddr()+"/metrics")
	for _, name := range []string{
		`fabric_connections{transport="websocket"} `,
		"fabric_longpoll_sessions ",
		"fabric_messages_replayed_total ",
		"# TYPE fabric_connections_refused_total counter",
		`fabric_connections_refused_total{cause="origin"} `,
	} {
		if code != 200 || !strings.Contains(body, name) {
			t.Fatalf("metrics %d: no %q in %s", code, name, body)
		}
	}
}

// Anonymous mode is loopback-only unless explicitly allowed.
func TestAnonymousOnlyOnLoopback(t *testing.T) {
	_, err := app.Start(app.Config{Listen: "0.0.0.0:0", OpsListen: "off", NATSListen: "off", DataDir: t.TempDir()})
	if !errors.Is(err, app.ErrOpenOnNetwork) || !strings.Contains(err.Error(), "--allow-anonymous") {
		t.Fatalf("open on 0.0.0.0: %v", err)
	}
	_, err = app.Start(app.Config{Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "0.0.0.0:0", DataDir: t.TempDir()})
	if !errors.Is(err, app.ErrOpenOnNetwork) {
		t.Fatalf("NATS open on 0.0.0.0: %v", err)
	}
	f := startFabric(t, func(c *app.Config) { c.Listen = "0.0.0.0:0"; c.AllowAnonymous = true })
	if f.HTTPAddr() == "" {
		t.Fatal("no listener")
	}
}

// 1,000 concurrent connections on one gateway, each joined, all receiving
// one broadcast exactly once.
//
// room:* keeps its history here but not its presence: a 1,000-member room
// under the member cap sends every member the full list and every join
// (about 100 MB in all, O(members²)), and 1,000 in-process clients decoding
// that under -race took tens of seconds of CPU out of the joins on a loaded
// machine. Presence at this size is the presence tests' subject
// (gateway/presence, gateway/presencecap_test.go, the presence storm).
func TestThousandConnectionsOneBroadcast(t *testing.T) {
	const n = 1000
	f := startFabric(t, func(c *app.Config) {
		c.Namespaces = namespace.Defaults()
		room := c.Namespaces["room"]
		room.Presence = false
		c.Namespaces["room"] = room
	})
	clients := make([]*phxclient.Client, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range clients {
		clients[i] = f.dial(phoenix.V2, phxclient.Options{})
	}
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s, _, err := c.JoinWait("room:big", nil, 30*time.Second); s != "ok" || err != nil {
				errs <- fmt.Errorf("join: %s %v", s, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.Gateway().Members("room:big"); got != n {
		t.Fatalf("%d members, want %d", got, n)
	}
	if got := f.interest("fabric_live.room.big"); got != 1 {
		t.Fatalf("%d NATS subscriptions for 1000 members, want 1", got)
	}
	f.publish("fabric.room.big", "hello", []byte(`{"n":1}`))
	f.publish("fabric.room.big", "marker", []byte(`{}`))
	onBig := func(m phxclient.Msg) bool { return m.Topic == "room:big" }
	errs = make(chan error, n)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := c.NextMatch(30*time.Second, onBig)
			if err != nil || m.Event != "hello" || string(m.Payload) != `{"n":1}` {
				errs <- fmt.Errorf("first message: %+v %v", m, err)
				return
			}
			// Exactly once: the next message on the channel is the marker.
			m, err = c.NextMatch(30*time.Second, onBig)
			if err != nil || m.Event != "marker" {
				errs <- fmt.Errorf("second message: %+v %v", m, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A client that never reads is cut with 4008 while another member of the
// same channel keeps receiving everything.
func TestSlowConsumerCutOthersUnaffected(t *testing.T) {
	f := startFabric(t, func(c *app.Config) { c.MaxQueueBytes = 64 << 10 })
	slow := f.dial(phoenix.V2, phxclient.Options{ReadBuffer: 4096, NoRead: true})
	fast := f.dial(phoenix.V2, phxclient.Options{})
	ref, _ := slow.Join("room:slow", nil)
	_ = ref
	if s, _, err := fast.JoinWait("room:slow", nil, wait); s != "ok" || err != nil {
		t.Fatalf("join: %s %v", s, err)
	}
	eventually(t, wait, "both members joined", func() bool { return f.Gateway().Members("room:slow") == 2 })

	const total = 20000
	body := []byte(`{"pad":"` + strings.Repeat("x", 1000) + `"}`)
	done := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			if _, err := fast.NextMatch(30*time.Second, func(m phxclient.Msg) bool { return m.Event == "flood" }); err != nil {
				done <- fmt.Errorf("fast reader got %d of %d: %v", i, total, err)
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < total; i++ {
		f.publish("fabric.room.slow", "flood", body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "slow consumer closed with 4008", func() bool {
		return f.Gateway().Stats().Transport.Closes[4008] == 1
	})
	eventually(t, wait, "slow member removed", func() bool { return f.Gateway().Members("room:slow") == 1 })
}

// Shutdown closes client sockets with 1001 (a reconnect code), after which
// phoenix.js reconnects elsewhere.
func TestShutdownGoingAway(t *testing.T) {
	f := startFabric(t, nil)
	c := f.dial(phoenix.V2, phxclient.Options{})
	if s, _, err := c.JoinWait("room:bye", nil, wait); s != "ok" || err != nil {
		t.Fatal(s, err)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		f.Shutdown(ctx)
	}()
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Close })
	if err != nil || m.CloseCode != 1001 {
		t.Fatalf("close: %+v %v", m, err)
	}
}
