package serverapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
	"github.com/fabric-rt/fabric/publisher"
	"github.com/fabric-rt/fabric/publisher/serverapi"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

const wait = 10 * time.Second

// Keys of the test server: narrow is scoped to room:ok, admin may only
// call the admin RPCs, all may do everything on room:*.
const (
	keyNarrow = "narrow-key-0123456789"
	keyAdmin  = "admin-key-0123456789"
	keyAll    = "all-key-0123456789abc"
	keyWrong  = "wrong-key-0123456789"
)

func keySpecs() []serverapi.KeySpec {
	return []serverapi.KeySpec{
		{Name: "narrow", SHA256: serverapi.HashKey(keyNarrow), Publish: []string{"room:ok"}, Presence: []string{"room:ok"}, History: []string{"room:ok"}},
		{Name: "admin", SHA256: serverapi.HashKey(keyAdmin), Admin: true},
		{Name: "all", Key: keyAll, Publish: []string{"room:*"}, Presence: []string{"room:*"}, History: []string{"room:*"}, Admin: true},
	}
}

// fakeCluster records every call; unit tests only (the real one is
// nats/natsctl, tested with real gateways there).
type fakeCluster struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeCluster) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeCluster) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

var cov = control.Coverage{Answered: []string{"gw1", "gw2"}, Missing: []string{"gw3"}}

func (f *fakeCluster) Presence(_ context.Context, topic string) (control.PresenceResult, error) {
	f.record("Presence " + topic)
	return control.PresenceResult{Topic: topic, Entries: []control.PresenceEntry{{Key: "u1", Metas: []json.RawMessage{json.RawMessage(`{"phx_ref":"a"}`)}}}, Coverage: cov}, nil
}

func (f *fakeCluster) PresenceStats(_ context.Context, topic string) (control.PresenceStatsResult, error) {
	f.record("PresenceStats " + topic)
	return control.PresenceStatsResult{Topic: topic, Members: 3, Connections: 4, Coverage: cov}, nil
}

func (f *fakeCluster) Channels(_ context.Context, pattern string) (control.ChannelsResult, error) {
	f.record("Channels " + pattern)
	return control.ChannelsResult{Channels: []control.ChannelInfo{{Topic: "room:ok", Members: 5}}, Coverage: cov}, nil
}

func (f *fakeCluster) Disconnect(_ context.Context, r control.DisconnectRequest) (control.Affected, error) {
	f.record(fmt.Sprintf("Disconnect %s %d %q %s", r.User, r.Code, r.Reason, r.Ban))
	return control.Affected{Count: 2, Coverage: cov}, nil
}

func (f *fakeCluster) Unsubscribe(_ context.Context, r control.UnsubscribeRequest) (control.Affected, error) {
	f.record("Unsubscribe " + r.User + " " + r.Topic)
	return control.Affected{Count: 1, Coverage: cov}, nil
}

func (f *fakeCluster) Revoke(_ context.Context, r control.RevokeRequest) (control.Affected, error) {
	f.record(fmt.Sprintf("Revoke %q %q %d", r.JTI, r.User, r.IssuedBefore.Unix()))
	return control.Affected{Count: 1, Coverage: cov}, nil
}

func (f *fakeCluster) Info(context.Context) (control.InfoResult, error) {
	f.record("Info")
	return control.InfoResult{Gateways: []control.GatewayInfo{{ID: "gw1", Version: "test", Uptime: time.Minute, Connections: 7, Channels: 2}},
		NATS: control.NATSInfo{ClusterName: "c", JetStream: true}, Coverage: cov}, nil
}

type fakeModerator struct{ c *fakeCluster }

func (m fakeModerator) ClearChannel(_ context.Context, topic string) error {
	m.c.record("ClearChannel " + topic)
	return nil
}

func (m fakeModerator) RemoveMessage(_ context.Context, topic string, offset uint64) error {
	m.c.record(fmt.Sprintf("RemoveMessage %s %d", topic, offset))
	return nil
}

type env struct {
	url     string
	nc      *nats.Conn // a plain client of the server's NATS
	cluster *fakeCluster
	log     *bytes.Buffer
	logMu   *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (e env) logText() string {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	return e.log.String()
}

type setupOpts struct {
	noCluster bool
	rate      float64
}

// setup serves a real Server (real NATS, broker and publisher; a recording
// Cluster and Moderator) over HTTP/1.1 and h2c.
func setup(t *testing.T, o setupOpts) env {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {MaxAge: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	pub, err := publisher.New(nc, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	creds, err := serverapi.NewCredentials(serverapi.CredentialsConfig{Keys: keySpecs(), Rate: o.rate})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	fc := &fakeCluster{}
	cfg := serverapi.Config{Publisher: pub, Credentials: creds, Audit: serverapi.NewAuditor(nc, "fabric", log), Logger: log}
	if !o.noCluster {
		cfg.History, cfg.Cluster, cfg.Moderator = b, fc, fakeModerator{fc}
	}
	api, err := serverapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Mount(mux)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return env{url: srv.URL, nc: natstest.Connect(t, s), cluster: fc, log: &buf, logMu: &mu}
}

// rpcs is every RPC of the service, in the proto's order.
var rpcs = []string{"Publish", "PublishBatch", "Broadcast", "Presence", "PresenceStats", "History", "Channels",
	"Disconnect", "Unsubscribe", "Revoke", "ClearChannel", "RemoveMessage", "Info"}

func newResp(rpc string) proto.Message {
	switch rpc {
	case "Publish":
		return &fabricv1.PublishResponse{}
	case "PublishBatch":
		return &fabricv1.PublishBatchResponse{}
	case "Broadcast":
		return &fabricv1.BroadcastResponse{}
	case "Presence":
		return &fabricv1.PresenceResponse{}
	case "PresenceStats":
		return &fabricv1.PresenceStatsResponse{}
	case "History":
		return &fabricv1.HistoryResponse{}
	case "Channels":
		return &fabricv1.ChannelsResponse{}
	case "Disconnect":
		return &fabricv1.DisconnectUserResponse{}
	case "Unsubscribe":
		return &fabricv1.UnsubscribeUserResponse{}
	case "Revoke":
		return &fabricv1.RevokeResponse{}
	case "ClearChannel":
		return &fabricv1.ClearChannelResponse{}
	case "RemoveMessage":
		return &fabricv1.RemoveMessageResponse{}
	case "Info":
		return &fabricv1.InfoResponse{}
	}
	panic(rpc)
}

// caller calls one RPC with a bearer key ("" for none) and returns the
// answer or the error's code.
type caller func(ctx context.Context, key, rpc string, req proto.Message) (proto.Message, connect.Code, error)

// generatedCaller uses the generated Connect client (Connect, gRPC or
// gRPC-Web protocol, by its options).
func generatedCaller(c fabricv1connect.ServerAPIClient) caller {
	return func(ctx context.Context, key, rpc string, req proto.Message) (proto.Message, connect.Code, error) {
		res, err := callGenerated(ctx, c, key, rpc, req)
		if err != nil {
			return nil, connect.CodeOf(err), err
		}
		return res, 0, nil
	}
}

func withKey[T any](m *T, key string) *connect.Request[T] {
	r := connect.NewRequest(m)
	if key != "" {
		r.Header().Set("Authorization", "Bearer "+key)
	}
	return r
}

func callGenerated(ctx context.Context, c fabricv1connect.ServerAPIClient, key, rpc string, req proto.Message) (proto.Message, error) {
	unwrap := func(m proto.Message, err error) (proto.Message, error) { return m, err }
	switch r := req.(type) {
	case *fabricv1.PublishRequest:
		res, err := c.Publish(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.PublishBatchRequest:
		res, err := c.PublishBatch(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.BroadcastRequest:
		res, err := c.Broadcast(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.PresenceRequest:
		res, err := c.Presence(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.PresenceStatsRequest:
		res, err := c.PresenceStats(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.HistoryRequest:
		res, err := c.History(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.ChannelsRequest:
		res, err := c.Channels(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.DisconnectUserRequest:
		res, err := c.Disconnect(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.UnsubscribeUserRequest:
		res, err := c.Unsubscribe(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.RevokeRequest:
		res, err := c.Revoke(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.ClearChannelRequest:
		res, err := c.ClearChannel(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.RemoveMessageRequest:
		res, err := c.RemoveMessage(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	case *fabricv1.InfoRequest:
		res, err := c.Info(ctx, withKey(r, key))
		return unwrap(msgOf(res), err)
	}
	panic(rpc)
}

// msgOf returns a response's message, or nil for a nil response.
func msgOf[T any, PT interface {
	*T
	proto.Message
}](res *connect.Response[T]) proto.Message {
	if res == nil {
		return nil
	}
	return PT(res.Msg)
}

// grpcGoCaller is a grpc-go client: the messages generated from the
// .proto, sent with ClientConn.Invoke on the service's method names (what
// protoc-gen-go-grpc's stubs do).
func grpcGoCaller(t *testing.T, url string) caller {
	conn, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return func(ctx context.Context, key, rpc string, req proto.Message) (proto.Message, connect.Code, error) {
		res := newResp(rpc)
		var opts []grpc.CallOption
		if key != "" {
			opts = append(opts, grpc.PerRPCCredsCallOption{Creds: bearer(key)})
		}
		if err := conn.Invoke(ctx, "/fabric.v1.ServerAPI/"+rpc, req, res, opts...); err != nil {
			return nil, connect.Code(status.Code(err)), err
		}
		return res, 0, nil
	}
}

// bearer is per-RPC credentials over plaintext (loopback tests only).
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (b bearer) RequireTransportSecurity() bool { return false }

// httpJSONCaller POSTs protojson to path(rpc) with plain net/http, as curl
// would: the Connect protocol's unary JSON form, or a REST path.
func httpJSONCaller(url string, path func(rpc string) string) caller {
	return func(ctx context.Context, key, rpc string, req proto.Message) (proto.Message, connect.Code, error) {
		body, err := protojson.Marshal(req)
		if err != nil {
			return nil, 0, err
		}
		hr, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+path(rpc), bytes.NewReader(body))
		hr.Header.Set("Content-Type", "application/json")
		if key != "" {
			hr.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			var e struct{ Code string }
			if err := json.Unmarshal(b, &e); err != nil {
				return nil, 0, fmt.Errorf("status %d, body %q", resp.StatusCode, b)
			}
			var c connect.Code
			if err := c.UnmarshalText([]byte(e.Code)); err != nil {
				return nil, 0, err
			}
			if want := httpStatus(c); want != resp.StatusCode {
				return nil, c, fmt.Errorf("code %s with HTTP %d, want %d", c, resp.StatusCode, want)
			}
			return nil, c, errors.New(string(b))
		}
		res := newResp(rpc)
		if err := protojson.Unmarshal(b, res); err != nil {
			return nil, 0, fmt.Errorf("%v: %s", err, b)
		}
		return res, 0, nil
	}
}

// httpStatus is the documented HTTP status of a code (docs/api.md).
func httpStatus(c connect.Code) int {
	switch c {
	case connect.CodeUnauthenticated:
		return 401
	case connect.CodePermissionDenied:
		return 403
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
		return 400
	case connect.CodeResourceExhausted:
		return 429
	case connect.CodeUnimplemented:
		return 501
	case connect.CodeUnavailable:
		return 503
	case connect.CodeNotFound:
		return 404
	}
	return 500
}

func restPath(rpc string) string {
	for p, proc := range serverapi.RESTPaths {
		if proc == "/fabric.v1.ServerAPI/"+rpc {
			return p
		}
	}
	return "/fabric.v1.ServerAPI/" + rpc // Publish and PublishBatch keep the publisher's own REST endpoint
}

// protocols are the clients every RPC is called with.
func protocols(t *testing.T, e env) map[string]caller {
	return map[string]caller{
		"connect-proto": generatedCaller(fabricv1connect.NewServerAPIClient(http.DefaultClient, e.url)),
		"connect-json":  generatedCaller(fabricv1connect.NewServerAPIClient(http.DefaultClient, e.url, connect.WithProtoJSON())),
		"grpc-web":      generatedCaller(fabricv1connect.NewServerAPIClient(http.DefaultClient, e.url, connect.WithGRPCWeb())),
		"grpc-go":       grpcGoCaller(t, e.url),
		"http-json":     httpJSONCaller(e.url, func(rpc string) string { return "/fabric.v1.ServerAPI/" + rpc }),
		"rest":          httpJSONCaller(e.url, restPath),
	}
}

func ctxT(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}
