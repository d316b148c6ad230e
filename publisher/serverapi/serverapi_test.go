package serverapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/publisher/serverapi"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// inScope is a request of rpc on topic (the admin RPCs ignore it).
func request(rpc, topic string) proto.Message {
	switch rpc {
	case "Publish":
		return &fabricv1.PublishRequest{Topic: topic, Event: "e", Payload: []byte(`{"n":1}`)}
	case "PublishBatch":
		return &fabricv1.PublishBatchRequest{Messages: []*fabricv1.PublishRequest{
			{Topic: topic, Event: "e", Payload: []byte(`{"n":1}`)}, {Topic: topic, Event: "e", Payload: []byte(`{"n":2}`)}}}
	case "Broadcast":
		return &fabricv1.BroadcastRequest{Topics: []string{topic, topic + "x"}, Event: "e", Payload: []byte(`{"n":3}`)}
	case "Presence":
		return &fabricv1.PresenceRequest{Topic: topic}
	case "PresenceStats":
		return &fabricv1.PresenceStatsRequest{Topic: topic}
	case "History":
		return &fabricv1.HistoryRequest{Topic: topic, Limit: 10}
	case "Channels":
		return &fabricv1.ChannelsRequest{Pattern: topic}
	case "Disconnect":
		return &fabricv1.DisconnectUserRequest{User: "u1", BanSeconds: 60}
	case "Unsubscribe":
		return &fabricv1.UnsubscribeUserRequest{User: "u1", Topic: topic}
	case "Revoke":
		return &fabricv1.RevokeRequest{Jti: "j1"}
	case "ClearChannel":
		return &fabricv1.ClearChannelRequest{Topic: topic}
	case "RemoveMessage":
		return &fabricv1.RemoveMessageRequest{Topic: topic, Offset: 1}
	case "Info":
		return &fabricv1.InfoRequest{}
	}
	panic(rpc)
}

// Every RPC through every protocol: gRPC (grpc-go), gRPC-Web and Connect
// (the generated client), Connect JSON and the REST paths with plain HTTP.
func TestEveryRPCEveryProtocol(t *testing.T) {
	e := setup(t, setupOpts{})
	for name, call := range protocols(t, e) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			topic := "room:" + strings.ReplaceAll(name, "-", "")
			got := map[string]proto.Message{}
			for _, rpc := range rpcs {
				tp := topic
				if rpc == "Broadcast" {
					tp = topic + "b"
				}
				res, code, err := call(ctx, keyAll, rpc, request(rpc, tp))
				if err != nil {
					t.Fatalf("%s: %v (%v)", rpc, err, code)
				}
				got[rpc] = res
			}
			pub := got["Publish"].(*fabricv1.PublishResponse)
			if pub.GetOffset() == 0 || pub.GetEpoch() == "" {
				t.Fatalf("Publish: %v", pub)
			}
			batch := got["PublishBatch"].(*fabricv1.PublishBatchResponse)
			if len(batch.GetResults()) != 2 || batch.Results[1].GetOffset() <= pub.GetOffset() || batch.Results[0].GetOffset() <= pub.GetOffset() {
				t.Fatalf("PublishBatch: %v", batch)
			}
			bc := got["Broadcast"].(*fabricv1.BroadcastResponse)
			if len(bc.GetResults()) != 2 || bc.Results[0].GetTopic() != topic+"b" || bc.Results[1].GetResult().GetOffset() == 0 || bc.Results[0].GetError() != "" {
				t.Fatalf("Broadcast: %v", bc)
			}
			pr := got["Presence"].(*fabricv1.PresenceResponse)
			if len(pr.GetEntries()) != 1 || pr.Entries[0].GetKey() != "u1" || pr.Entries[0].MetasJson[0] != `{"phx_ref":"a"}` ||
				!slices.Equal(pr.GetCoverage().GetMissing(), []string{"gw3"}) {
				t.Fatalf("Presence: %v", pr)
			}
			ps := got["PresenceStats"].(*fabricv1.PresenceStatsResponse)
			if ps.GetMembers() != 3 || ps.GetConnections() != 4 || len(ps.GetCoverage().GetAnswered()) != 2 {
				t.Fatalf("PresenceStats: %v", ps)
			}
			h := got["History"].(*fabricv1.HistoryResponse)
			// The batch's two messages are sent concurrently: either order.
			lastBatch := max(batch.Results[0].GetOffset(), batch.Results[1].GetOffset())
			if !h.GetRecovered() || h.GetEpoch() != pub.GetEpoch() || len(h.GetMessages()) != 3 ||
				h.Messages[0].GetOffset() != pub.GetOffset() || string(h.Messages[0].GetPayload()) != `{"n":1}` ||
				h.Messages[1].GetPrev() != pub.GetOffset() || h.Messages[2].GetPrev() != h.Messages[1].GetOffset() ||
				h.GetNext().GetOffset() != lastBatch || !h.GetDone() {
				t.Fatalf("History: %v", h)
			}
			ch := got["Channels"].(*fabricv1.ChannelsResponse)
			if len(ch.GetChannels()) != 1 || ch.Channels[0].GetMembers() != 5 {
				t.Fatalf("Channels: %v", ch)
			}
			if d := got["Disconnect"].(*fabricv1.DisconnectUserResponse); d.GetClosed() != 2 {
				t.Fatalf("Disconnect: %v", d)
			}
			if u := got["Unsubscribe"].(*fabricv1.UnsubscribeUserResponse); u.GetClosed() != 1 {
				t.Fatalf("Unsubscribe: %v", u)
			}
			if r := got["Revoke"].(*fabricv1.RevokeResponse); r.GetClosed() != 1 {
				t.Fatalf("Revoke: %v", r)
			}
			in := got["Info"].(*fabricv1.InfoResponse)
			if len(in.GetGateways()) != 1 || in.Gateways[0].GetUptimeSeconds() != 60 || !in.GetNats().GetJetstream() {
				t.Fatalf("Info: %v", in)
			}
		})
	}
	calls := e.cluster.Calls()
	for _, want := range []string{`Disconnect u1 0 "" 1m0s`, "Unsubscribe u1 room:grpcgo", `Revoke "j1" "" -62135596800`,
		"ClearChannel room:rest", "RemoveMessage room:connectjson 1", "Channels room:grpcweb", "Info"} {
		if !slices.Contains(calls, want) {
			t.Errorf("the cluster was not called with %q: %q", want, calls)
		}
	}
}

// The scope matrix: every RPC × {no credential, wrong key, out of scope,
// in scope}, through each protocol, answers the documented code, and a
// refused request has no effect at all.
func TestScopeMatrix(t *testing.T) {
	e := setup(t, setupOpts{})
	admin := map[string]bool{"Disconnect": true, "Unsubscribe": true, "Revoke": true, "ClearChannel": true, "RemoveMessage": true}
	sub, err := e.nc.SubscribeSync("fabric.room.>")
	if err != nil {
		t.Fatal(err)
	}
	for name, call := range protocols(t, e) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			for _, rpc := range rpcs {
				before := len(e.cluster.Calls())
				inKey, outKey, outTopic := keyNarrow, keyNarrow, "room:other"
				if admin[rpc] {
					inKey, outKey = keyAdmin, keyNarrow
				}
				cases := []struct {
					what, key, topic string
					want             connect.Code
				}{
					{"no credential", "", "room:ok", connect.CodeUnauthenticated},
					{"wrong key", keyWrong, "room:ok", connect.CodeUnauthenticated},
					{"out of scope", outKey, outTopic, connect.CodePermissionDenied},
					{"in scope", inKey, "room:ok", 0},
				}
				if rpc == "Info" {
					cases[2] = struct {
						what, key, topic string
						want             connect.Code
					}{"a malformed bearer", "not-a-key", "", connect.CodeUnauthenticated} // Info has no scope: any valid credential
				}
				for _, c := range cases {
					req := request(rpc, c.topic)
					if rpc == "Broadcast" {
						// One topic in scope, one not: refused whole.
						req.(*fabricv1.BroadcastRequest).Topics = []string{"room:ok", c.topic}
					}
					if rpc == "Broadcast" && c.want == 0 {
						req.(*fabricv1.BroadcastRequest).Topics = []string{"room:ok"}
					}
					_, code, err := call(ctx, c.key, rpc, req)
					if code != c.want {
						t.Fatalf("%s, %s: code %v, want %v (%v)", rpc, c.what, code, c.want, err)
					}
					if c.want != 0 {
						if n := len(e.cluster.Calls()); n != before {
							t.Fatalf("%s, %s: refused, but the cluster was called: %q", rpc, c.what, e.cluster.Calls()[before:])
						}
					}
				}
			}
		})
	}
	// Nothing refused reached NATS: every message on room.> is one of the
	// in-scope publishes to room:ok (Publish 1 + PublishBatch 2 +
	// Broadcast 1 per protocol).
	want := 4 * len(protocols(t, e))
	for i := 0; i < want; i++ {
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatalf("message %d of %d: %v", i, want, err)
		}
		if m.Subject != "fabric.room.ok" {
			t.Fatalf("a refused request published to %s", m.Subject)
		}
	}
	// A marker sent after everything arrives next: nothing else was sent.
	if _, code, err := protocols(t, e)["connect-json"](ctxT(t), keyNarrow, "Publish", &fabricv1.PublishRequest{Topic: "room:ok", Event: "marker"}); err != nil {
		t.Fatal(code, err)
	}
	m, err := sub.NextMsg(wait)
	if err != nil || m.Header.Get("Fabric-Event") != "marker" {
		t.Fatalf("after the marker: %v %v", m, err)
	}
}

// Admin RPCs are audited on NATS and in the log: who, what, when; never
// the key.
func TestAudit(t *testing.T) {
	e := setup(t, setupOpts{})
	sub, err := e.nc.SubscribeSync("fabric_audit.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	call := protocols(t, e)["connect-json"]
	ctx := ctxT(t)
	start := time.Now().Add(-time.Second)
	for _, rpc := range []string{"Disconnect", "Unsubscribe", "Revoke", "ClearChannel", "RemoveMessage"} {
		if _, code, err := call(ctx, keyAdmin, rpc, request(rpc, "room:ok")); err != nil {
			t.Fatal(rpc, code, err)
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatalf("%s: no audit event: %v", rpc, err)
		}
		if m.Subject != serverapi.AuditSubject("fabric", rpc) {
			t.Fatalf("%s: audit event on %s", rpc, m.Subject)
		}
		var ev serverapi.AuditEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Who != "key:admin" || ev.RPC != rpc || !ev.OK || ev.Time.Before(start) || len(ev.Args) == 0 {
			t.Fatalf("%s: audit event %+v", rpc, ev)
		}
		if bytes.Contains(m.Data, []byte(keyAdmin)) {
			t.Fatalf("%s: the key is in the audit event", rpc)
		}
	}
	ev := struct{ Args map[string]any }{}
	_ = ev
	log := e.logText()
	if strings.Count(log, "msg=audit") != 5 || !strings.Contains(log, "who=key:admin") || !strings.Contains(log, "rpc=Disconnect") {
		t.Fatalf("log:\n%s", log)
	}
	if strings.Contains(log, keyAdmin) || strings.Contains(log, keyAll) {
		t.Fatal("a key is in the log")
	}
}

// Without a Cluster, Moderator or history, their RPCs say so:
// Unimplemented (HTTP 501), with a message naming what is missing.
func TestUnimplementedWithoutCluster(t *testing.T) {
	e := setup(t, setupOpts{noCluster: true})
	for _, proto := range []string{"connect-json", "rest", "grpc-go"} {
		call := protocols(t, e)[proto]
		for _, rpc := range rpcs {
			_, code, err := call(ctxT(t), keyAll, rpc, request(rpc, "room:ok"))
			switch rpc {
			case "Publish", "PublishBatch", "Broadcast":
				if err != nil {
					t.Fatalf("%s %s: %v", proto, rpc, err)
				}
			default:
				if code != connect.CodeUnimplemented || !strings.Contains(err.Error(), "not available on this gateway") {
					t.Fatalf("%s %s: %v %v", proto, rpc, code, err)
				}
			}
		}
	}
}

// A publish through Connect JSON or REST takes its payload as a JSON value
// in "data", forwarded byte-exact (a 2^64 integer, key order).
func TestDataJSON(t *testing.T) {
	e := setup(t, setupOpts{})
	sub, err := e.nc.SubscribeSync("fabric.room.data")
	if err != nil {
		t.Fatal(err)
	}
	_ = e.nc.Flush()
	data := `{"z":18446744073709551616,"a":[1,2]}`
	bodies := map[string]string{
		"/fabric.v1.ServerAPI/Publish":      `{"topic":"room:data","event":"e","data":` + data + `}`,
		"/fabric.v1.ServerAPI/PublishBatch": `{"messages":[{"topic":"room:data","data":` + data + `}]}`,
		"/fabric.v1.ServerAPI/Broadcast":    `{"topics":["room:data"],"data":` + data + `}`,
		"/api/v1/broadcast":                 `{"topics":["room:data"],"data":` + data + `}`,
	}
	for path, body := range bodies {
		req, _ := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+keyAll)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != data {
			t.Fatalf("%s: payload %s, want %s", path, m.Data, data)
		}
	}
	// Both forms at once: 400, nothing sent.
	req, _ := http.NewRequest(http.MethodPost, e.url+"/fabric.v1.ServerAPI/Publish", strings.NewReader(`{"topic":"room:data","payload":"e30=","data":{}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+keyAll)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("payload and data: %d", resp.StatusCode)
	}
}

// Each credential has its own rate: past its burst, ResourceExhausted
// (429), while another credential still gets in.
func TestRateLimit(t *testing.T) {
	e := setup(t, setupOpts{rate: 1}) // burst 2
	call := protocols(t, e)["rest"]
	ctx := ctxT(t)
	codes := []connect.Code{}
	for i := 0; i < 4; i++ {
		_, code, _ := call(ctx, keyNarrow, "PresenceStats", request("PresenceStats", "room:ok"))
		codes = append(codes, code)
	}
	if codes[0] != 0 || codes[3] != connect.CodeResourceExhausted {
		t.Fatalf("codes %v: want ok first and resource_exhausted by the fourth", codes)
	}
	if _, code, err := call(ctx, keyAll, "PresenceStats", request("PresenceStats", "room:ok")); err != nil {
		t.Fatalf("another credential: %v %v", code, err)
	}
}

// History pages forwards from an offset, returns the latest N without
// one, and is honest when a position cannot be read from.
func TestHistoryPaging(t *testing.T) {
	e := setup(t, setupOpts{})
	call := protocols(t, e)["connect-proto"]
	ctx := ctxT(t)
	var offsets []uint64
	var epoch string
	for i := 0; i < 25; i++ {
		res, _, err := call(ctx, keyAll, "Publish", &fabricv1.PublishRequest{Topic: "room:h", Payload: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, res.(*fabricv1.PublishResponse).GetOffset())
		epoch = res.(*fabricv1.PublishResponse).GetEpoch()
		if _, _, err := call(ctx, keyAll, "Publish", &fabricv1.PublishRequest{Topic: "room:noise", Payload: []byte("0")}); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint64
	since := &fabricv1.Position{} // from the start, epoch filled in
	for page := 0; page < 10; page++ {
		res, _, err := call(ctx, keyAll, "History", &fabricv1.HistoryRequest{Topic: "room:h", Since: since, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		h := res.(*fabricv1.HistoryResponse)
		if !h.GetRecovered() || h.GetEpoch() != epoch {
			t.Fatalf("page %d: %v", page, h)
		}
		for _, m := range h.GetMessages() {
			got = append(got, m.GetOffset())
		}
		since = h.GetNext()
		if h.GetDone() {
			break
		}
	}
	if !slices.Equal(got, offsets) {
		t.Fatalf("paged %v, published %v", got, offsets)
	}
	res, _, err := call(ctx, keyAll, "History", &fabricv1.HistoryRequest{Topic: "room:h", Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	h := res.(*fabricv1.HistoryResponse)
	var last []uint64
	for _, m := range h.GetMessages() {
		last = append(last, m.GetOffset())
	}
	if !slices.Equal(last, offsets[20:]) || h.Messages[0].GetPrev() != offsets[19] || string(h.Messages[4].GetPayload()) != "24" {
		t.Fatalf("latest 5: %v, want %v", last, offsets[20:])
	}
	for _, c := range []struct {
		since  *fabricv1.Position
		reason string
	}{
		{&fabricv1.Position{Epoch: "other", Offset: 1}, "epoch_changed"},
		{&fabricv1.Position{Epoch: epoch, Offset: offsets[24] + 1000}, "offset_ahead"},
	} {
		res, _, err := call(ctx, keyAll, "History", &fabricv1.HistoryRequest{Topic: "room:h", Since: c.since})
		if err != nil {
			t.Fatal(err)
		}
		h := res.(*fabricv1.HistoryResponse)
		if h.GetRecovered() || h.GetReason() != c.reason || len(h.GetMessages()) != 0 {
			t.Fatalf("since %v: %v, want reason %s", c.since, h, c.reason)
		}
	}
	if _, code, _ := call(ctx, keyAll, "History", &fabricv1.HistoryRequest{Topic: "room:h", Limit: 5000}); code != connect.CodeInvalidArgument {
		t.Fatalf("limit 5000: %v", code)
	}
}

// gRPC health and server reflection answer grpc-go's own clients.
func TestHealthAndReflection(t *testing.T) {
	e := setup(t, setupOpts{})
	conn, err := grpc.NewClient(strings.TrimPrefix(e.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := ctxT(t)
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "fabric.v1.ServerAPI"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	st, err := reflectpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&reflectpb.ServerReflectionRequest{MessageRequest: &reflectpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	rr, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.CloseSend()
	var names []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "fabric.v1.ServerAPI") {
		t.Fatalf("reflection lists %v", names)
	}
}

var _ = context.Background
var _ nats.Msg

// A REST path answers only POST, saying so in JSON.
func TestRESTMethod(t *testing.T) {
	e := setup(t, setupOpts{})
	resp, err := http.Get(e.url + "/api/v1/info")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || !json.Valid(b) {
		t.Fatalf("GET: %d %q %s", resp.StatusCode, resp.Header.Get("Allow"), b)
	}
}
