package publisher_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/publisher"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

const apiKey = "s3cret-publisher-key"

type api struct {
	*env
	srv *httptest.Server
}

// setupAPI serves the handler over real HTTP, authenticated with APIKeys,
// except that the bearer token "client-connection-token" stands for a
// valid credential that may not publish (403).
func setupAPI(t *testing.T) *api {
	t.Helper()
	e := setup(t, publisher.Config{})
	keys := publisher.APIKeys([]string{apiKey, "other-key"})
	h, err := publisher.NewHandler(publisher.HandlerConfig{
		Publisher: e.p,
		Authenticate: func(r *http.Request) error {
			if r.Header.Get("Authorization") == "Bearer client-connection-token" {
				return publisher.ErrForbidden
			}
			return keys(r)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, h)
	mux.Handle(publisher.PathBatch, h)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &api{env: e, srv: srv}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (a *api) post(t *testing.T, path, key, contentType string, body []byte) response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, a.srv.URL+path, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func (a *api) postJSON(t *testing.T, req *fabricv1.PublishRequest) (response, *fabricv1.PublishResponse) {
	t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r := a.post(t, publisher.PathPublish, apiKey, "application/json", b)
	var out fabricv1.PublishResponse
	if r.status == http.StatusOK {
		if err := protojson.Unmarshal(r.body, &out); err != nil {
			t.Fatalf("response %s: %v", r.body, err)
		}
	}
	return r, &out
}

func errorCode(t *testing.T, r response) string {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error
}

func TestHandlerJSON(t *testing.T) {
	a := setupAPI(t)
	// Hand-written JSON, the way curl users write it: payload in base64,
	// snake_case or lowerCamelCase field names.
	body := `{"topic":"room:lobby","event":"new_msg","payload":"eyJib2R5IjoiaGkifQ==","content_type":"application/json","headers":{"X-Trace":"t1"}}`
	r := a.post(t, publisher.PathPublish, apiKey, "application/json; charset=utf-8", []byte(body))
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	var got map[string]any
	json.Unmarshal(r.body, &got)
	if got["offset"] != "1" || got["epoch"] != a.epoch(t) || got["duplicate"] != false {
		t.Fatalf("response %s", r.body)
	}
	m, err := a.stream(t).GetMsg(ctxT(t), 1)
	if err != nil || string(m.Data) != `{"body":"hi"}` || m.Header.Get("Fabric-Event") != "new_msg" || m.Header.Get("X-Trace") != "t1" {
		t.Fatalf("stored %q %v %v", m.Data, m.Header, err)
	}
	r = a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(`{"topic":"room:lobby","idempotencyKey":"camel","payload":"AAE="}`))
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"offset":"2"`) {
		t.Fatalf("camelCase: %d %s", r.status, r.body)
	}
}

func TestHandlerProtobuf(t *testing.T) {
	a := setupAPI(t)
	b, _ := proto.Marshal(&fabricv1.PublishRequest{Topic: "room:pb", Event: "blob", Payload: []byte{1, 2, 3},
		ContentType: "application/octet-stream"})
	r := a.post(t, publisher.PathPublish, apiKey, "application/x-protobuf", b)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/x-protobuf" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var out fabricv1.PublishResponse
	if err := proto.Unmarshal(r.body, &out); err != nil || out.Offset != 1 || out.Epoch != a.epoch(t) || out.Duplicate {
		t.Fatalf("response %v %v", &out, err)
	}
	// Ephemeral namespace: 200, offset 0, no epoch.
	b, _ = proto.Marshal(&fabricv1.PublishRequest{Topic: "chat:pb", Event: "blob"})
	r = a.post(t, publisher.PathPublish, apiKey, "application/x-protobuf", b)
	out.Reset()
	if err := proto.Unmarshal(r.body, &out); r.status != http.StatusOK || err != nil || out.Offset != 0 || out.Epoch != "" {
		t.Fatalf("ephemeral %d %v %v", r.status, &out, err)
	}
}

// Everything but an acknowledged message is refused with its own status, never
// 200: a body too large, bad protobuf, wrong credentials, other content types,
// a bad topic or event, JetStream down; a repeated idempotency key is one
// message (docs/http-api.md).
func TestHandlerRefusals(t *testing.T) {
	a := setupAPI(t)
	valid, _ := proto.Marshal(&fabricv1.PublishRequest{Topic: "room:d29", Event: "x", Payload: []byte(`{}`)})

	t.Run("a 2 MiB body is 413", func(t *testing.T) {
		big, _ := proto.Marshal(&fabricv1.PublishRequest{Topic: "room:d29", Payload: make([]byte, 2<<20)})
		r := a.post(t, publisher.PathPublish, apiKey, "application/x-protobuf", big)
		if r.status != http.StatusRequestEntityTooLarge || errorCode(t, r) != "too_large" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// Also without a Content-Length (chunked): the reader stops at
		// the limit.
		req, _ := http.NewRequest(http.MethodPost, a.srv.URL+publisher.PathPublish, io.MultiReader(bytes.NewReader(big)))
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.ContentLength != 0 || resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("chunked: content length %d, status %d", req.ContentLength, resp.StatusCode)
		}
	})
	t.Run("b invalid protobuf is 400", func(t *testing.T) {
		r := a.post(t, publisher.PathPublish, apiKey, "application/x-protobuf", []byte{0xff, 0xff, 0xff, 0xff})
		if r.status != http.StatusBadRequest || errorCode(t, r) != "invalid_body" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		r = a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(`{"topic":"room:a","payload":"not base64!"}`))
		if r.status != http.StatusBadRequest {
			t.Fatalf("bad JSON payload: %d %s", r.status, r.body)
		}
		r = a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(`{"topic":"room:a","unknown_field":1}`))
		if r.status != http.StatusBadRequest {
			t.Fatalf("unknown JSON field: %d %s", r.status, r.body)
		}
	})
	t.Run("c wrong credentials are 401 or 403", func(t *testing.T) {
		for key, want := range map[string]int{"": 401, "wrong": 401, "client-connection-token": 403} {
			r := a.post(t, publisher.PathPublish, key, "application/x-protobuf", valid)
			if r.status != want {
				t.Fatalf("key %q: %d, want %d", key, r.status, want)
			}
			if want == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Fatalf("401 without WWW-Authenticate")
			}
		}
		if r := a.post(t, publisher.PathPublish, "other-key", "application/x-protobuf", valid); r.status != 200 {
			t.Fatalf("second key: %d %s", r.status, r.body)
		}
	})
	t.Run("d same idempotency key twice is one message", func(t *testing.T) {
		live, err := a.nc.SubscribeSync("fabric_live.room.once") // what gateways deliver from
		if err != nil {
			t.Fatal(err)
		}
		a.nc.Flush()
		before := a.stored(t)
		req := &fabricv1.PublishRequest{Topic: "room:once", Event: "x", Payload: []byte(`{"n":1}`), IdempotencyKey: "d29-key"}
		r1, first := a.postJSON(t, req)
		r2, second := a.postJSON(t, req)
		if r1.status != 200 || r2.status != 200 {
			t.Fatalf("statuses %d %d", r1.status, r2.status)
		}
		if first.Duplicate || !second.Duplicate || first.Offset != second.Offset || first.Offset == 0 {
			t.Fatalf("first %v, second %v", first, second)
		}
		if n := a.stored(t) - before; n != 1 {
			t.Fatalf("%d messages stored, want 1", n)
		}
		_, marker := a.postJSON(t, &fabricv1.PublishRequest{Topic: "room:once", Event: "marker"})
		for _, want := range []uint64{first.Offset, marker.Offset} {
			m, err := live.NextMsg(wait)
			if err != nil {
				t.Fatal(err)
			}
			if m.Header.Get("Nats-Sequence") != strconv.FormatUint(want, 10) {
				t.Fatalf("live delivery %v, want sequence %d (one delivery, then the marker)", m.Header, want)
			}
			if want == marker.Offset && m.Header.Get("Fabric-Event") != "marker" {
				t.Fatalf("second live delivery is %v, want the marker", m.Header)
			}
		}
	})
	t.Run("415 for other content types", func(t *testing.T) {
		for _, ct := range []string{"text/plain", "", "application/xml", "multipart/form-data; boundary=x"} {
			r := a.post(t, publisher.PathPublish, apiKey, ct, valid)
			if r.status != http.StatusUnsupportedMediaType {
				t.Fatalf("%q: %d", ct, r.status)
			}
		}
	})
	t.Run("400 for a bad topic or event, nothing stored", func(t *testing.T) {
		before := a.stored(t)
		for _, c := range []struct{ req, code string }{
			{`{"topic":"room:*"}`, "invalid_topic"},
			{`{"topic":""}`, "invalid_topic"},
			{`{"topic":"room:a","event":"phx_reply"}`, "invalid_event"},
			{`{"topic":"room:a","event":"fabric:offset"}`, "invalid_event"},
			{`{"topic":"room:a","headers":{"Nats-Rollup":"sub"}}`, "invalid_option"},
		} {
			r := a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(c.req))
			if r.status != 400 || errorCode(t, r) != c.code {
				t.Fatalf("%s: %d %s", c.req, r.status, r.body)
			}
		}
		if a.stored(t) != before {
			t.Fatal("a refused request stored a message")
		}
	})
	t.Run("405 and 404", func(t *testing.T) {
		resp, err := http.Get(a.srv.URL + publisher.PathPublish)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	})
	// Last: it takes the server down.
	t.Run("e JetStream down is 503 with Retry-After, never 200", func(t *testing.T) {
		a.s.Shutdown()
		for _, ct := range []string{"application/x-protobuf", "application/json"} {
			body := valid
			if ct == "application/json" {
				body = []byte(`{"topic":"room:d29","event":"x"}`)
			}
			start := time.Now()
			r := a.post(t, publisher.PathPublish, apiKey, ct, body)
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("answered after %v", d)
			}
			if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || errorCode(t, r) != "unavailable" {
				t.Fatalf("%d %v %s", r.status, r.header, r.body)
			}
		}
	})
}

func TestHandlerBatch(t *testing.T) {
	a := setupAPI(t)
	batch := &fabricv1.PublishBatchRequest{Messages: []*fabricv1.PublishRequest{
		{Topic: "room:a", Event: "x", Payload: []byte(`{"i":0}`), IdempotencyKey: "b0"},
		{Topic: "room:b", Event: "x", Payload: []byte(`{"i":1}`), IdempotencyKey: "b1"},
		{Topic: "chat:c", Event: "x", Payload: []byte(`{"i":2}`)},
	}}
	b, _ := proto.Marshal(batch)
	r := a.post(t, publisher.PathBatch, apiKey, "application/x-protobuf", b)
	var out fabricv1.PublishBatchResponse
	if err := proto.Unmarshal(r.body, &out); r.status != 200 || err != nil || len(out.Results) != 3 {
		t.Fatalf("%d %v %v", r.status, &out, err)
	}
	if out.Results[0].Offset == 0 || out.Results[1].Offset == 0 || out.Results[0].Offset == out.Results[1].Offset || out.Results[2].Offset != 0 {
		t.Fatalf("results %v", &out)
	}
	// Retried (JSON this time): the keyed messages are duplicates.
	jb, _ := protojson.Marshal(batch)
	r = a.post(t, publisher.PathBatch, apiKey, "application/json", jb)
	var again fabricv1.PublishBatchResponse
	if err := protojson.Unmarshal(r.body, &again); r.status != 200 || err != nil {
		t.Fatalf("%d %s %v", r.status, r.body, err)
	}
	if !again.Results[0].Duplicate || again.Results[0].Offset != out.Results[0].Offset || !again.Results[1].Duplicate {
		t.Fatalf("retried batch %v", &again)
	}
	if a.stored(t) != 2 {
		t.Fatalf("%d stored, want 2", a.stored(t))
	}
	// One invalid message: 400 and nothing of the batch is sent.
	bad := &fabricv1.PublishBatchRequest{Messages: []*fabricv1.PublishRequest{
		{Topic: "room:a", Event: "x", IdempotencyKey: "new"},
		{Topic: "room:a", Event: "phx_close"},
	}}
	b, _ = proto.Marshal(bad)
	if r := a.post(t, publisher.PathBatch, apiKey, "application/x-protobuf", b); r.status != 400 || errorCode(t, r) != "invalid_event" {
		t.Fatalf("bad batch: %d %s", r.status, r.body)
	}
	if a.stored(t) != 2 {
		t.Fatal("part of a refused batch was stored")
	}
}

func TestNewHandlerValidates(t *testing.T) {
	e := setup(t, publisher.Config{})
	if _, err := publisher.NewHandler(publisher.HandlerConfig{Publisher: e.p}); err == nil {
		t.Fatal("a handler without Authenticate was built")
	}
	if _, err := publisher.NewHandler(publisher.HandlerConfig{Authenticate: func(*http.Request) error { return nil }}); err == nil {
		t.Fatal("a handler without Publisher was built")
	}
}

func TestAPIKeys(t *testing.T) {
	auth := publisher.APIKeys([]string{"k1", "", "k2"})
	for h, want := range map[string]error{
		"":            publisher.ErrUnauthenticated,
		"Bearer":      publisher.ErrUnauthenticated,
		"Bearer ":     publisher.ErrUnauthenticated,
		"Basic k1":    publisher.ErrUnauthenticated,
		"Bearer k3":   publisher.ErrUnauthenticated,
		"Bearer k1x":  publisher.ErrUnauthenticated,
		"Bearer k1":   nil,
		"bearer k2":   nil,
		"Bearer  k2 ": nil,
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		if err := auth(r); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Errorf("%q: %v, want %v", h, err, want)
		}
	}
	none := publisher.APIKeys([]string{""})
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Authorization", "Bearer ")
	if none(r) == nil {
		t.Fatal("an empty key list accepted a request")
	}
}
