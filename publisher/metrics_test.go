package publisher_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

// An ephemeral message carries its publish time (Unix nanoseconds) for the
// gateways' fan-out latency; a persistent one does not (JetStream stamps
// it), so nothing extra is stored.
func TestPublishTimeHeader(t *testing.T) {
	e := setup(t, publisher.Config{})
	sub, err := e.nc.SubscribeSync("fabric.>")
	if err != nil {
		t.Fatal(err)
	}
	e.nc.Flush()
	before := time.Now()
	if _, err := e.p.Publish(ctxT(t), "chat:x", "e", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(m.Header.Get(wire.HeaderTime), 10, 64)
	if err != nil {
		t.Fatalf("ephemeral message: %s header %q: %v", wire.HeaderTime, m.Header.Get(wire.HeaderTime), err)
	}
	if ts := time.Unix(0, ns); ts.Before(before.Truncate(0)) || ts.After(time.Now()) {
		t.Fatalf("%s = %v, outside the publish call (%v)", wire.HeaderTime, ts, before)
	}

	if _, err := e.p.Publish(ctxT(t), "room:x", "e", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	m, err = sub.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Header[wire.HeaderTime]; ok {
		t.Fatalf("persistent message carries %s: %v", wire.HeaderTime, v)
	}
}

// Responses counts every answer by status, with every documented status
// present from the start.
func TestHandlerResponses(t *testing.T) {
	e := setup(t, publisher.Config{})
	h, err := publisher.NewHandler(publisher.HandlerConfig{Publisher: e.p, Authenticate: publisher.APIKeys([]string{apiKey})})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range publisher.StatusCodes {
		if n, ok := h.Responses()[c]; !ok || n != 0 {
			t.Fatalf("fresh handler: code %d = %d, %v", c, n, ok)
		}
	}
	do := func(method, key, body string) int {
		req := httptest.NewRequest(method, publisher.PathPublish, bytes.NewReader([]byte(body)))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Code
	}
	codes := []int{
		do(http.MethodPost, apiKey, `{"topic":"chat:x","event":"e","payload":"e30="}`),
		do(http.MethodPost, apiKey, `{"topic":"chat:x","event":"e","payload":"e30="}`),
		do(http.MethodPost, "", `{}`),
		do(http.MethodGet, apiKey, ``),
		do(http.MethodPost, apiKey, `{"topic":"bad::topic"}`),
	}
	want := map[int]uint64{}
	for _, c := range codes {
		want[c]++
	}
	if want[http.StatusOK] != 2 || want[http.StatusUnauthorized] != 1 || want[http.StatusMethodNotAllowed] != 1 || want[http.StatusBadRequest] != 1 {
		t.Fatalf("statuses %v", codes)
	}
	got := h.Responses()
	for _, c := range publisher.StatusCodes {
		if got[c] != want[c] {
			t.Fatalf("Responses = %v, want %v (and 0 for the other codes)", got, want)
		}
	}
}
