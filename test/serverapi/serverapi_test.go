// Package serverapi tests the server API end to end: a whole Fabric
// in-process, the API called by real clients of each protocol (grpc-go,
// the Connect client in its Connect and gRPC-Web modes, plain HTTP JSON),
// and the Go Phoenix client receiving what they publish.
package serverapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/publisher/serverapi"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

const (
	wait       = 15 * time.Second
	testSecret = "an-hs256-test-secret-of-32-bytes!"
	keyRoomA   = "room-a-key-0123456789"
	keyOps     = "ops-key-0123456789abc"
	keyPublish = "legacy-publish-key-0123"
	keyAll     = "all-rooms-key-0123456789"
)

func mint(t *testing.T, mc auth.MintClaims) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(testSecret)}, mc)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// start runs a Fabric with JWT auth, a keys file (room-a: publish and
// history on room:a; ops: admin and history everywhere; all: everything
// on room:*) and a legacy
// --publish-api-keys key; ownListener puts the API on --api-listen.
func start(t *testing.T, ownListener bool, mutate ...func(*app.Config)) *app.App {
	t.Helper()
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	doc := `keys:
  - name: room-a
    sha256: ` + serverapi.HashKey(keyRoomA) + `
    publish: ["room:a"]
    history: ["room:a"]
  - name: ops
    sha256: ` + serverapi.HashKey(keyOps) + `
    history: [">"]
    admin: true
  - name: all
    sha256: ` + serverapi.HashKey(keyAll) + `
    publish: ["room:*"]
    presence: ["room:*"]
    history: ["room:*"]
    admin: true
`
	if err := os.WriteFile(keys, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := app.Config{
		Listen:         "127.0.0.1:0",
		OpsListen:      "off",
		NATSListen:     "127.0.0.1:0",
		DataDir:        t.TempDir(),
		JWTSecret:      testSecret,
		APIKeysFile:    keys,
		PublishAPIKeys: []string{keyPublish},
	}
	if ownListener {
		cfg.APIListen = proctest.FreeAddrOn(t, "127.0.0.1")
	}
	for _, m := range mutate {
		m(&cfg)
	}
	return testkit.StartApp(t, cfg)
}

func apiURL(a *app.App) string {
	if addr := a.APIAddr(); addr != "" {
		return "http://" + addr
	}
	return "http://" + a.HTTPAddr()
}

// member joins topics with a connection token and records what arrives.
type member struct {
	mu   sync.Mutex
	msgs []phx.Message
}

func (m *member) add(msg phx.Message) {
	m.mu.Lock()
	m.msgs = append(m.msgs, msg)
	m.mu.Unlock()
}

func (m *member) waitFor(t *testing.T, what string, ok func(phx.Message) bool) phx.Message {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m.mu.Lock()
		for _, msg := range m.msgs {
			if ok(msg) {
				m.mu.Unlock()
				return msg
			}
		}
		m.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no %s within %s", what, wait)
	return phx.Message{}
}

func (m *member) all() []phx.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]phx.Message(nil), m.msgs...)
}

func join(t *testing.T, a *app.App, topics ...string) *member {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := phx.Dial(ctx, "ws://"+a.HTTPAddr()+"/socket", phx.Options{AuthToken: mint(t, auth.MintClaims{Subject: "player", Channels: []string{"room:*"}})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m := &member{}
	for _, topic := range topics {
		if _, err := s.Join(ctx, topic, nil, phx.OnMessage(m.add)); err != nil {
			t.Fatalf("join %s: %v", topic, err)
		}
	}
	return m
}

func req[T any](msg *T, bearer string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if bearer != "" {
		r.Header().Set("Authorization", "Bearer "+bearer)
	}
	return r
}

func ctxT(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// Publish and Broadcast from each protocol reach a Phoenix client, on the
// client listener (gRPC over h2c beside WebSocket) and on --api-listen.
func TestPublishReachesClients(t *testing.T) {
	for _, own := range []bool{false, true} {
		name := map[bool]string{false: "client-listener", true: "api-listen"}[own]
		t.Run(name, func(t *testing.T) {
			a := start(t, own)
			m := join(t, a, "room:a", "room:b")
			url := apiURL(a)
			ctx := ctxT(t)
			ops := mint(t, auth.MintClaims{Subject: "backend", Type: auth.TypePublisher, Publish: []string{"room:*"}})
			clients := map[string]fabricv1connect.ServerAPIClient{
				"connect":  fabricv1connect.NewServerAPIClient(http.DefaultClient, url),
				"json":     fabricv1connect.NewServerAPIClient(http.DefaultClient, url, connect.WithProtoJSON()),
				"grpc-web": fabricv1connect.NewServerAPIClient(http.DefaultClient, url, connect.WithGRPCWeb()),
			}
			for name, c := range clients {
				ev := "pub-" + name
				res, err := c.Publish(ctx, req(&fabricv1.PublishRequest{Topic: "room:a", Event: ev, Payload: []byte(`{"from":"` + name + `"}`)}, keyRoomA))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				got := m.waitFor(t, ev, func(msg phx.Message) bool { return msg.Event == ev })
				if got.Offset != res.Msg.GetOffset() || string(got.Payload) != `{"from":"`+name+`"}` {
					t.Fatalf("%s: client got %+v, API said offset %d", name, got, res.Msg.GetOffset())
				}
				bev := "bc-" + name
				br, err := c.Broadcast(ctx, req(&fabricv1.BroadcastRequest{Topics: []string{"room:a", "room:b"}, Event: bev, Payload: []byte(`{}`)}, ops))
				if err != nil {
					t.Fatalf("%s broadcast: %v", name, err)
				}
				for i, topic := range []string{"room:a", "room:b"} {
					got := m.waitFor(t, bev+" on "+topic, func(msg phx.Message) bool { return msg.Event == bev && msg.Topic == topic })
					if got.Offset != br.Msg.Results[i].GetResult().GetOffset() {
						t.Fatalf("%s broadcast %s: offset %d, API said %d", name, topic, got.Offset, br.Msg.Results[i].GetResult().GetOffset())
					}
				}
			}
			// grpc-go, HTTP/2 without TLS.
			conn, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var res fabricv1.PublishResponse
			err = conn.Invoke(ctx, fabricv1connect.ServerAPIPublishProcedure,
				&fabricv1.PublishRequest{Topic: "room:b", Event: "grpc-go", Payload: []byte(`{"g":1}`)}, &res,
				grpc.PerRPCCredsCallOption{Creds: bearer(ops)})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.waitFor(t, "grpc-go", func(msg phx.Message) bool { return msg.Event == "grpc-go" }); got.Offset != res.GetOffset() {
				t.Fatalf("grpc-go: client offset %d, API %d", got.Offset, res.GetOffset())
			}
			if own {
				// The API is not on the public port then; the REST publish
				// path still is.
				c := fabricv1connect.NewServerAPIClient(http.DefaultClient, "http://"+a.HTTPAddr())
				_, err := c.Info(ctx, req(&fabricv1.InfoRequest{}, keyOps))
				if connect.CodeOf(err) != connect.CodeNotFound && connect.CodeOf(err) != connect.CodeUnimplemented {
					t.Fatalf("the API answered on the client listener with --api-listen: %v", err)
				}
			}
		})
	}
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (b bearer) RequireTransportSecurity() bool { return false }

// Scopes for real: keys from the keys file, publisher JWTs with scope
// claims, a legacy publish key and a client's connection token; the REST
// publish endpoint applies the same scopes; refused requests publish
// nothing.
func TestScopes(t *testing.T) {
	a := start(t, false)
	m := join(t, a, "room:a", "room:b")
	url := apiURL(a)
	c := fabricv1connect.NewServerAPIClient(http.DefaultClient, url, connect.WithProtoJSON())
	ctx := ctxT(t)
	scoped := mint(t, auth.MintClaims{Subject: "svc", Type: auth.TypePublisher, Publish: []string{"room:a"}})
	clientTok := mint(t, auth.MintClaims{Subject: "player", Channels: []string{"room:*"}, Publish: []string{"room:*"}})
	expired := mint(t, auth.MintClaims{Subject: "svc", Type: auth.TypePublisher, TTL: time.Second, Now: time.Now().Add(-time.Hour)})
	pubB := func(cred string) error {
		_, err := c.Publish(ctx, req(&fabricv1.PublishRequest{Topic: "room:b", Event: "refused"}, cred))
		return err
	}
	for _, cse := range []struct {
		what, cred string
		want       connect.Code
	}{
		{"no credential", "", connect.CodeUnauthenticated},
		{"wrong key", "nope-0123456789abcdef", connect.CodeUnauthenticated},
		{"expired publisher JWT", expired, connect.CodeUnauthenticated},
		{"client connection token", clientTok, connect.CodePermissionDenied},
		{"key scoped to room:a", keyRoomA, connect.CodePermissionDenied},
		{"publisher JWT scoped to room:a", scoped, connect.CodePermissionDenied},
		{"admin-only key", keyOps, connect.CodePermissionDenied},
	} {
		if code := connect.CodeOf(pubB(cse.cred)); code != cse.want {
			t.Errorf("%s publishing to room:b: %v, want %v", cse.what, code, cse.want)
		}
	}
	// Broadcast with one topic out of scope: nothing is published.
	_, err := c.Broadcast(ctx, req(&fabricv1.BroadcastRequest{Topics: []string{"room:a", "room:b"}, Event: "refused"}, scoped))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("partial broadcast: %v", err)
	}
	// The legacy key publishes anywhere, and may do nothing else.
	if _, err := c.Publish(ctx, req(&fabricv1.PublishRequest{Topic: "room:b", Event: "legacy"}, keyPublish)); err != nil {
		t.Fatalf("legacy key: %v", err)
	}
	if _, err := c.History(ctx, req(&fabricv1.HistoryRequest{Topic: "room:a"}, keyPublish)); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("legacy key reading history: %v", err)
	}
	// The REST publish endpoint: same credentials, same scopes.
	for _, cse := range []struct {
		cred string
		want int
	}{{"", 401}, {keyRoomA, 403}, {scoped, 403}, {clientTok, 403}, {keyPublish, 200}} {
		body := `{"topic":"room:b","event":"rest","data":{"k":1}}`
		if cse.want != 200 {
			body = `{"topic":"room:b","event":"refused","data":{"k":1}}`
		}
		hr, _ := http.NewRequest(http.MethodPost, "http://"+a.HTTPAddr()+"/api/v1/publish", strings.NewReader(body))
		hr.Header.Set("Content-Type", "application/json")
		if cse.cred != "" {
			hr.Header.Set("Authorization", "Bearer "+cse.cred)
		}
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != cse.want {
			t.Fatalf("REST publish with %.10q…: %d %s, want %d", cse.cred, resp.StatusCode, b, cse.want)
		}
	}
	m.waitFor(t, "the REST publish", func(msg phx.Message) bool { return msg.Event == "rest" })
	for _, msg := range m.all() {
		if msg.Event == "refused" {
			t.Fatalf("a refused request was delivered: %+v", msg)
		}
	}
	// In scope: the scoped JWT on room:a.
	if _, err := c.Publish(ctx, req(&fabricv1.PublishRequest{Topic: "room:a", Event: "ok"}, scoped)); err != nil {
		t.Fatal(err)
	}
	m.waitFor(t, "the scoped publish", func(msg phx.Message) bool { return msg.Event == "ok" })
}

// The cluster RPCs are served by the gateway's own cluster control
// (nats/natsctl) and moderation (its broker): Info lists this gateway as
// having answered, and the REST path of Disconnect reaches it too.
func TestClusterRPCsAnswer(t *testing.T) {
	a := start(t, false)
	c := fabricv1connect.NewServerAPIClient(http.DefaultClient, apiURL(a))
	res, err := c.Info(ctxT(t), req(&fabricv1.InfoRequest{}, keyOps))
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if len(res.Msg.GetGateways()) < 1 || len(res.Msg.GetCoverage().GetAnswered()) < 1 {
		t.Fatalf("Info: %v", res.Msg)
	}
	hr, _ := http.NewRequest(http.MethodPost, apiURL(a)+"/api/v1/disconnect", strings.NewReader(`{"user":"u"}`))
	hr.Header.Set("Authorization", "Bearer "+keyOps)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("answered")) {
		t.Fatalf("REST disconnect: %d %s", resp.StatusCode, b)
	}
}
