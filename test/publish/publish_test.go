// Package publish holds end-to-end tests of the publisher: a whole Fabric
// started in-process, messages published with the publisher library and
// through the HTTP endpoint, and raw Phoenix clients checking that they
// receive exactly what was published, with the offset the publisher was
// told in the frame's ref slot.
package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/publisher"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

const wait = 10 * time.Second

type fabric struct {
	*app.App
	p   *publisher.Publisher
	api *httptest.Server // the HTTP endpoint, on its own listener for now
}

const apiKey = "e2e-key"

// startFabric runs a Fabric on random loopback ports, and a publisher
// service connected to its NATS over TCP, as a separate process would be.
func startFabric(t *testing.T) *fabric {
	t.Helper()
	a := testkit.StartApp(t, app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		LeaveGrace: 50 * time.Millisecond,
	})
	nc := testkit.Connect(t, a.NATSURL())
	p, err := publisher.New(nc, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	h, err := publisher.NewHandler(publisher.HandlerConfig{Publisher: p, Authenticate: publisher.APIKeys([]string{apiKey})})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, h)
	mux.Handle(publisher.PathBatch, h)
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)
	return &fabric{App: a, p: p, api: api}
}

// join opens a raw Phoenix client joined to topic and returns it with the
// join reply.
func (f *fabric) join(t *testing.T, v phoenix.Version, topic string) (*phxclient.Client, json.RawMessage) {
	t.Helper()
	vsn := "2.0.0"
	if v == phoenix.V1 {
		vsn = "1.0.0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := phxclient.Dial(ctx, fmt.Sprintf("ws://%s/socket/websocket?vsn=%s", f.HTTPAddr(), vsn), v, phxclient.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	status, resp, err := c.JoinWait(topic, map[string]any{}, wait)
	if err != nil || status != "ok" {
		t.Fatalf("join %s: %s %s %v", topic, status, resp, err)
	}
	return c, resp
}

// postJSON publishes through the HTTP endpoint in the JSON mapping.
func (f *fabric) postJSON(t *testing.T, req *fabricv1.PublishRequest) *fabricv1.PublishResponse {
	t.Helper()
	b, _ := protojson.Marshal(req)
	body := f.post(t, "application/json", b)
	var out fabricv1.PublishResponse
	if err := protojson.Unmarshal(body, &out); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	return &out
}

// postProto publishes through the HTTP endpoint as protobuf.
func (f *fabric) postProto(t *testing.T, req *fabricv1.PublishRequest) *fabricv1.PublishResponse {
	t.Helper()
	b, _ := proto.Marshal(req)
	body := f.post(t, "application/x-protobuf", b)
	var out fabricv1.PublishResponse
	if err := proto.Unmarshal(body, &out); err != nil {
		t.Fatalf("response: %v", err)
	}
	return &out
}

func (f *fabric) post(t *testing.T, ct string, b []byte) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.api.URL+publisher.PathPublish, bytes.NewReader(b))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %d %s", resp.StatusCode, body)
	}
	return body
}

func next(t *testing.T, c *phxclient.Client, event string) phxclient.Msg {
	t.Helper()
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == event || m.Close })
	if err != nil || m.Close {
		t.Fatalf("waiting for %s: %+v %v", event, m, err)
	}
	return m
}

func offsetRef(n uint64) phoenix.Ref { return phoenix.R(strconv.FormatUint(n, 10)) }

// Every way of publishing a JSON message to a persistent channel: the
// client receives the event and the payload untouched, with the offset
// the publisher was given in the ref slot, and the join reply's epoch is
// the publisher's.
func TestPersistentJSON(t *testing.T) {
	f := startFabric(t)
	c, joinReply := f.join(t, phoenix.V2, "room:e2e")
	var pos struct {
		Epoch  string
		Offset uint64 `json:",string"`
	}
	if err := json.Unmarshal(joinReply, &pos); err != nil || pos.Epoch == "" {
		t.Fatalf("join reply %s", joinReply)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	type sent struct {
		how     string
		event   string
		payload string
		epoch   string
		offset  uint64
	}
	var all []sent
	res, err := f.p.Publish(ctx, "room:e2e", "lib_msg", []byte(`{"via":"library"}`), publisher.WithIdempotencyKey("lib-1"))
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, sent{"library", "lib_msg", `{"via":"library"}`, res.Epoch, res.Offset})
	r := f.postJSON(t, &fabricv1.PublishRequest{Topic: "room:e2e", Event: "json_msg", Payload: []byte(`{"via":"http json"}`)})
	all = append(all, sent{"HTTP JSON", "json_msg", `{"via":"http json"}`, r.Epoch, r.Offset})
	r = f.postProto(t, &fabricv1.PublishRequest{Topic: "room:e2e", Event: "pb_msg", Payload: []byte(`[1,2,3]`), ContentType: "application/json"})
	all = append(all, sent{"HTTP protobuf", "pb_msg", `[1,2,3]`, r.Epoch, r.Offset})

	for _, s := range all {
		if s.epoch != pos.Epoch || s.offset == 0 {
			t.Fatalf("%s: epoch %q offset %d, join said epoch %q", s.how, s.epoch, s.offset, pos.Epoch)
		}
		m := next(t, c, s.event)
		if m.Topic != "room:e2e" || string(m.Payload) != s.payload || m.Binary || m.Ref != offsetRef(s.offset) {
			t.Fatalf("%s: received %+v (payload %s), want offset %d", s.how, m, m.Payload, s.offset)
		}
	}

	// A retry with the same key is answered with the first offset and is
	// not delivered again: the next frame is the marker.
	again, err := f.p.Publish(ctx, "room:e2e", "lib_msg", []byte(`{"via":"library"}`), publisher.WithIdempotencyKey("lib-1"))
	if err != nil || !again.Duplicate || again.Offset != all[0].offset {
		t.Fatalf("retry: %+v %v", again, err)
	}
	if _, err := f.p.Publish(ctx, "room:e2e", "marker", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Presence frames are the tracker's own and come whenever it flushes
	// (the joiner's presence_state may follow the messages above).
	m, err := c.NextMatch(wait, func(m phxclient.Msg) bool {
		return m.Event != "presence_state" && m.Event != "presence_diff"
	})
	if err != nil || m.Event != "marker" {
		t.Fatalf("after a duplicate the next frame is %+v %v, want the marker", m, err)
	}
}

// A binary payload goes out as a v2 binary broadcast, followed by the
// fabric:offset frame that carries its offset; a v1 client gets base64.
func TestPersistentBinary(t *testing.T) {
	f := startFabric(t)
	c2, _ := f.join(t, phoenix.V2, "room:bin")
	c1, _ := f.join(t, phoenix.V1, "room:bin")
	payload := []byte{0, 1, 2, 0xff}
	r := f.postProto(t, &fabricv1.PublishRequest{Topic: "room:bin", Event: "blob", Payload: payload, ContentType: "application/octet-stream"})
	if r.Offset == 0 {
		t.Fatalf("response %v", r)
	}
	m := next(t, c2, "blob")
	if !m.Binary || !bytes.Equal(m.Bytes, payload) || m.Topic != "room:bin" {
		t.Fatalf("v2 binary: %+v", m)
	}
	off := next(t, c2, "fabric:offset")
	if off.Ref != offsetRef(r.Offset) {
		t.Fatalf("fabric:offset %+v, want %d", off, r.Offset)
	}
	m = next(t, c1, "blob")
	var b64 struct{ Base64 []byte }
	if err := json.Unmarshal(m.Payload, &b64); err != nil || !bytes.Equal(b64.Base64, payload) || m.Ref != offsetRef(r.Offset) {
		t.Fatalf("v1: %+v %s %v", m, m.Payload, err)
	}
}

// An ephemeral namespace: offset 0 for the publisher, a null ref for the
// client.
func TestEphemeral(t *testing.T) {
	f := startFabric(t)
	c, _ := f.join(t, phoenix.V2, "chat:e2e")
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := f.p.Publish(ctx, "chat:e2e", "typing", []byte(`{"who":"ann"}`))
	if err != nil || res != (publisher.Result{}) {
		t.Fatalf("publish: %+v %v", res, err)
	}
	m := next(t, c, "typing")
	if string(m.Payload) != `{"who":"ann"}` || m.Ref.Valid {
		t.Fatalf("received %+v", m)
	}
	r := f.postJSON(t, &fabricv1.PublishRequest{Topic: "chat:e2e", Event: "typing", Payload: []byte(`{"who":"bob"}`)})
	if r.Offset != 0 || r.Epoch != "" {
		t.Fatalf("HTTP response %v", r)
	}
	if m := next(t, c, "typing"); string(m.Payload) != `{"who":"bob"}` {
		t.Fatalf("received %+v", m)
	}
}

// Broadcast reaches the members of every topic, each with its own offset.
func TestBroadcast(t *testing.T) {
	f := startFabric(t)
	topics := []string{"room:b1", "room:b2", "chat:b3"}
	clients := make([]*phxclient.Client, len(topics))
	for i, topic := range topics {
		clients[i], _ = f.join(t, phoenix.V2, topic)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := f.p.Broadcast(ctx, topics, "news", []byte(`{"headline":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		m := next(t, c, "news")
		want := phoenix.Null
		if res[i].Offset != 0 {
			want = offsetRef(res[i].Offset)
		}
		if m.Topic != topics[i] || string(m.Payload) != `{"headline":"x"}` || m.Ref != want {
			t.Fatalf("%s: %+v, result %+v", topics[i], m, res[i])
		}
	}
}
