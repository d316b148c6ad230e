package app

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// TestCompressionByNamespace: with --compression, a broadcast reaches a
// client that negotiated permessage-deflate compressed, and its replay on
// resume too; a namespace configured with compression: false stays plain;
// a client that did not negotiate gets everything plain on the same
// channel; the metrics count each namespace apart.
func TestCompressionByNamespace(t *testing.T) {
	off := false
	a, err := Start(Config{Listen: "127.0.0.1:0", OpsListen: "127.0.0.1:0", NATSListen: "off", DataDir: t.TempDir(),
		JWTSecret: metricsSecret, AllowQueryToken: true, PublishAPIKeys: []string{metricsAPIKey},
		Compression: true, CompressionThreshold: 256,
		Namespaces: map[string]namespace.Namespace{"room": {History: true}, "raw": {Compression: &off}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	tok, err := auth.Mint(auth.Config{Secret: []byte(metricsSecret)},
		auth.MintClaims{Subject: "ann", Channels: []string{"room:*", "raw:*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dial := func(deflate bool) *phxclient.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, fmt.Sprintf("ws://%s/socket/websocket?vsn=2.0.0&token=%s", a.HTTPAddr(), tok), phoenix.V2, phxclient.Options{Deflate: deflate})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if c.Deflated() != deflate {
			t.Fatalf("negotiated %v, offered %v", c.Deflated(), deflate)
		}
		return c
	}
	join := func(c *phxclient.Client, topic string, params any) json.RawMessage {
		t.Helper()
		status, resp, err := c.JoinWait(topic, params, 10*time.Second)
		if err != nil || status != "ok" {
			t.Fatalf("join %s: %s %s %v", topic, status, resp, err)
		}
		return resp
	}
	body := `{"text":"` + strings.Repeat("a compressible sentence, ", 40) + `"}`
	publish := func(topic string) {
		t.Helper()
		apiPublish(t, a, `{"topic":"`+topic+`","event":"big","payload":"`+base64.StdEncoding.EncodeToString([]byte(body))+`"}`)
	}
	// receive waits for the next "big" on topic and reports whether it
	// arrived compressed.
	receive := func(c *phxclient.Client, topic string) bool {
		t.Helper()
		m, err := c.NextMatch(10*time.Second, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == "big" })
		if err != nil {
			t.Fatalf("no big on %s: %v", topic, err)
		}
		if !strings.Contains(string(m.Payload), "compressible sentence") {
			t.Fatalf("payload %s", m.Payload)
		}
		return m.Compressed
	}

	z, plain := dial(true), dial(false)
	var pos struct {
		Epoch string `json:"epoch"`
	}
	for _, c := range []*phxclient.Client{z, plain} {
		if err := json.Unmarshal(join(c, "room:a", nil), &pos); err != nil || pos.Epoch == "" {
			t.Fatalf("room:a position %+v: %v", pos, err)
		}
		join(c, "raw:a", nil)
	}
	publish("room:a")
	if !receive(z, "room:a") || receive(plain, "room:a") {
		t.Fatal("room:a: want compressed to the deflate client only")
	}
	publish("raw:a")
	if receive(z, "raw:a") || receive(plain, "raw:a") {
		t.Fatal("raw:a (compression: false) arrived compressed")
	}
	// A resume from offset 0 replays the stored message: compressed too.
	r := dial(true)
	join(r, "room:a", map[string]any{"epoch": pos.Epoch, "offset": 0})
	if !receive(r, "room:a") {
		t.Fatal("replayed message not compressed")
	}
	fams := scrape(t, a.OpsAddr())
	if v, _ := sample(fams, "fabric_compression_bytes_total", map[string]string{"namespace": "room", "stage": "before"}); v < float64(len(body)) {
		t.Fatalf("room before = %v, want ≥ %d", v, len(body))
	}
	if v, _ := sample(fams, "fabric_compression_bytes_total", map[string]string{"namespace": "raw", "stage": "before"}); v != 0 {
		t.Fatalf("raw before = %v, want 0", v)
	}
}

// The NATS adapter is told only what it runs: the stream settings of the
// namespaces that keep history, and the presence namespaces' TTLs (defaults
// applied); nothing of pushes, joins or compression.
func TestAdapterSettingsFromPolicy(t *testing.T) {
	nss := namespace.MustNew(map[string]namespace.Namespace{
		"room": {History: true, MaxAge: time.Hour, MaxBytes: -1, MaxMsgsPerChannel: 10, Replicas: 3, AllowDelete: true, Presence: true},
		"hall": {Presence: true, PresenceTTL: 3 * time.Second},
		"game": {Pushes: namespace.PushesRequest, Joins: namespace.JoinsRequest},
	})
	st := streams(nss)
	if len(st) != 1 || st["room"] != (natsbroker.Stream{MaxAge: time.Hour, MaxBytes: -1, MaxMsgsPerChannel: 10, Replicas: 3, AllowDelete: true}) {
		t.Fatalf("streams: %+v", st)
	}
	ttl := presenceTTLs(nss)
	if len(ttl) != 2 || ttl["room"] != namespace.DefaultPresenceTTL || ttl["hall"] != 3*time.Second {
		t.Fatalf("presence TTLs: %v", ttl)
	}
}

// TestLiveSubscriptionReachesBroker: the namespace policy's
// live_subscription values are the adapter's (namespace cannot import
// it), and streams passes them on.
func TestLiveSubscriptionReachesBroker(t *testing.T) {
	for ns, nb := range map[string]string{
		namespace.LiveAuto: natsbroker.LiveAuto, namespace.LiveChannel: natsbroker.LiveChannel, namespace.LiveNamespace: natsbroker.LiveNamespace,
	} {
		if ns != nb {
			t.Fatalf("namespace says %q, natsbroker %q", ns, nb)
		}
		set := namespace.MustNew(map[string]namespace.Namespace{"room": {History: true, LiveSubscription: ns}})
		if got := streams(set)["room"].Live; got != ns {
			t.Fatalf("streams: live %q, want %q", got, ns)
		}
	}
}

// TestLiveSubscriptionNamespaceEndToEnd: with live_subscription:
// namespace, clients of different channels each get their channel's
// messages (in order, none of the other's) through the namespace's one
// wildcard subscription, a resume replays them, and the metric says
// which mode the namespace is in.
func TestLiveSubscriptionNamespaceEndToEnd(t *testing.T) {
	a, err := Start(Config{Listen: "127.0.0.1:0", OpsListen: "127.0.0.1:0", NATSListen: "off", DataDir: t.TempDir(),
		JWTSecret: metricsSecret, AllowQueryToken: true, PublishAPIKeys: []string{metricsAPIKey},
		Namespaces: map[string]namespace.Namespace{"room": {History: true, Presence: true, LiveSubscription: namespace.LiveNamespace}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	tok, err := auth.Mint(auth.Config{Secret: []byte(metricsSecret)}, auth.MintClaims{Subject: "ann", Channels: []string{"room:*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dial := func() *phxclient.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, fmt.Sprintf("ws://%s/socket/websocket?vsn=2.0.0&token=%s", a.HTTPAddr(), tok), phoenix.V2, phxclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var pos struct {
		Epoch string `json:"epoch"`
	}
	clients := map[string]*phxclient.Client{"room:u1": dial(), "room:u2": dial()}
	for topic, c := range clients {
		status, resp, err := c.JoinWait(topic, nil, 10*time.Second)
		if err != nil || status != "ok" || json.Unmarshal(resp, &pos) != nil {
			t.Fatalf("join %s: %s %s %v", topic, status, resp, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.broker.WildcardNamespaces() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the namespace never switched to its wildcard")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range 3 {
		for topic := range clients {
			payload := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{"to":%q,"i":%d}`, topic, i)))
			apiPublish(t, a, `{"topic":"`+topic+`","event":"note","payload":"`+payload+`"}`)
		}
	}
	next := func(c *phxclient.Client, topic string, i int) {
		t.Helper()
		m, err := c.NextMatch(10*time.Second, func(m phxclient.Msg) bool { return m.Event == "note" })
		if err != nil {
			t.Fatalf("%s: no message %d: %v", topic, i, err)
		}
		if want := fmt.Sprintf(`{"to":%q,"i":%d}`, topic, i); m.Topic != topic || string(m.Payload) != want {
			t.Fatalf("%s message %d: %s %s, want %s", topic, i, m.Topic, m.Payload, want)
		}
	}
	for topic, c := range clients {
		for i := range 3 {
			next(c, topic, i)
		}
	}
	r := dial()
	if status, resp, err := r.JoinWait("room:u1", map[string]any{"epoch": pos.Epoch, "offset": 0}, 10*time.Second); err != nil || status != "ok" {
		t.Fatalf("resume: %s %s %v", status, resp, err)
	}
	for i := range 3 {
		next(r, "room:u1", i)
	}
	if v, ok := sample(scrape(t, a.OpsAddr()), "fabric_live_wildcard_namespaces", nil); !ok || v != 1 {
		t.Fatalf("fabric_live_wildcard_namespaces = %v (present %v), want 1", v, ok)
	}
}
