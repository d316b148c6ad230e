package publisher_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fabric-rt/fabric/publisher"
)

// HTTPClient against the real Handler and NATS: JSON and protobuf, options
// carried to the stored message, idempotency, and the gateway's refusals
// as *HTTPError.
func TestHTTPClient(t *testing.T) {
	a := setupAPI(t)
	for i, protobuf := range []bool{false, true} {
		c := &publisher.HTTPClient{BaseURL: a.srv.URL, APIKey: apiKey, Protobuf: protobuf}
		res, err := c.Publish(ctxT(t), "room:http", "new_msg", []byte(`{"n":1}`),
			publisher.WithContentType("application/json"), publisher.WithHeader("Trace-Id", "t1"))
		if err != nil || res.Offset != uint64(1+i) || res.Epoch != a.epoch(t) || res.Duplicate {
			t.Fatalf("protobuf=%v: %+v %v", protobuf, res, err)
		}
		sm, err := a.stream(t).GetMsg(ctxT(t), res.Offset)
		if err != nil {
			t.Fatal(err)
		}
		if string(sm.Data) != `{"n":1}` || sm.Header.Get("Fabric-Event") != "new_msg" ||
			sm.Header.Get("Content-Type") != "application/json" || sm.Header.Get("Trace-Id") != "t1" {
			t.Fatalf("stored %q %v", sm.Data, sm.Header)
		}
	}

	// A base URL with a trailing slash; the same key twice is one message.
	c := &publisher.HTTPClient{BaseURL: a.srv.URL + "/", APIKey: apiKey}
	first, err := c.Publish(ctxT(t), "room:http", "e", []byte("{}"), publisher.WithIdempotencyKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Publish(ctxT(t), "room:http", "e", []byte("{}"), publisher.WithIdempotencyKey("k1"))
	if err != nil || !again.Duplicate || again.Offset != first.Offset {
		t.Fatalf("retry with the same key: %+v %v (first %+v)", again, err, first)
	}

	// The gateway's refusals.
	for _, tc := range []struct {
		key, topic string
		status     int
		code       string
	}{
		{"wrong-key", "room:http", http.StatusUnauthorized, "unauthenticated"},
		{"client-connection-token", "room:http", http.StatusForbidden, "forbidden"},
		{apiKey, "room:*", http.StatusBadRequest, "invalid_topic"},
	} {
		_, err := (&publisher.HTTPClient{BaseURL: a.srv.URL, APIKey: tc.key}).Publish(ctxT(t), tc.topic, "e", []byte("{}"))
		var he *publisher.HTTPError
		if !errors.As(err, &he) || he.Status != tc.status || he.Code != tc.code || he.Message == "" {
			t.Fatalf("key %q topic %q: %v (%+v), want %d %s", tc.key, tc.topic, err, he, tc.status, tc.code)
		}
		if strings.Contains(err.Error(), apiKey) {
			t.Fatalf("the key is in the error: %v", err)
		}
	}
}

// Options are checked before anything is sent, as Publisher.Publish checks them.
func TestHTTPClientRefusesBeforeSending(t *testing.T) {
	var sent atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { sent.Add(1) }))
	defer srv.Close()
	for name, c := range map[string]struct {
		base string
		opts []publisher.Option
	}{
		"not http":            {"ftp://example.com", nil},
		"no host":             {"http://", nil},
		"bad idempotency key": {srv.URL, []publisher.Option{publisher.WithIdempotencyKey("a\tb")}},
		"reserved header":     {srv.URL, []publisher.Option{publisher.WithHeader("Nats-Rollup", "all")}},
		"header twice": {srv.URL, []publisher.Option{publisher.WithHeader("Trace-Id", "1"),
			publisher.WithHeader("Trace-Id", "2")}},
	} {
		_, err := (&publisher.HTTPClient{BaseURL: c.base}).Publish(ctxT(t), "room:a", "e", nil, c.opts...)
		if !errors.Is(err, publisher.ErrInvalidOption) {
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
}

// A 503's Retry-After and a body that is not the gateway's JSON both reach
// the error.
func TestHTTPErrorText(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			w.Header().Set("Retry-After", "2")
			http.Error(w, `{"error":"unavailable","message":"not acknowledged"}`, http.StatusServiceUnavailable)
			return
		}
		http.Error(w, "proxy says no", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := (&publisher.HTTPClient{BaseURL: srv.URL, APIKey: "k"}).Publish(ctxT(t), "room:a", "e", nil)
	if err == nil || err.Error() != "503 Service Unavailable: not acknowledged (retry after 2s)" {
		t.Fatalf("503: %v", err)
	}
	_, err = (&publisher.HTTPClient{BaseURL: srv.URL}).Publish(ctxT(t), "room:a", "e", nil)
	var he *publisher.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusBadGateway || he.Code != "" || he.Message != "proxy says no" {
		t.Fatalf("502: %v %+v", err, he)
	}
}
