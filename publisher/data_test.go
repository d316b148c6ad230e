package publisher_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/fabric-rt/fabric/publisher"
)

// "data" carries a JSON payload as a JSON value; the stored message is the
// client's bytes, whitespace between tokens aside: integers beyond 2^53,
// number spellings, escapes and key order all survive.
func TestHandlerDataIsByteExact(t *testing.T) {
	a := setupAPI(t)
	cases := []struct{ data, stored string }{
		{`{ "z": 1, "a": [12345678901234567890, 1.50e3, -0], "s": "é\u00e9 \" x" }`,
			`{"z":1,"a":[12345678901234567890,1.50e3,-0],"s":"é\u00e9 \" x"}`},
		{`"just a string"`, `"just a string"`},
		{`[9007199254740993]`, `[9007199254740993]`},
	}
	for i, tc := range cases {
		body := `{"topic":"room:data","event":"new_msg","data":` + tc.data + `,"idempotency_key":"k` + string(rune('0'+i)) + `"}`
		r := a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(body))
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.data, r.status, r.body)
		}
		m, err := a.stream(t).GetMsg(ctxT(t), uint64(i+1))
		if err != nil || string(m.Data) != tc.stored || m.Header.Get("Fabric-Event") != "new_msg" {
			t.Fatalf("stored %q (err %v), want %q", m.Data, err, tc.stored)
		}
	}
}

func TestHandlerDataErrors(t *testing.T) {
	a := setupAPI(t)
	cases := []struct{ name, body, msg string }{
		{"both forms", `{"topic":"room:a","payload":"e30=","data":{}}`, "not both"},
		{"invalid JSON", `{"topic":"room:a","data":{"a":}}`, "not valid JSON"},
		{"truncated", `{"topic":"room:a","data":[1,2`, "not valid JSON"},
		{"data twice", `{"topic":"room:a","data":1,"data":2}`, "given twice"},
		{"after the object", `{"topic":"room:a","data":1} {}`, "after the object"},
		{"not an object", `[{"topic":"room:a","data":1}]`, "not a JSON object"},
	}
	for _, tc := range cases {
		r := a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(tc.body))
		if r.status != http.StatusBadRequest || errorCode(t, r) != "invalid_body" || !strings.Contains(string(r.body), tc.msg) {
			t.Errorf("%s: %d %s, want 400 invalid_body saying %q", tc.name, r.status, r.body, tc.msg)
		}
	}
	if n := a.stored(t); n != 0 {
		t.Fatalf("%d messages stored from refused requests", n)
	}
	// "data": null is "not set", as protojson reads null: the base64
	// payload beside it is used.
	r := a.post(t, publisher.PathPublish, apiKey, "application/json", []byte(`{"topic":"room:a","payload":"e30=","data":null}`))
	if m, err := a.stream(t).GetMsg(ctxT(t), 1); r.status != http.StatusOK || err != nil || string(m.Data) != `{}` {
		t.Fatalf("data null: %d %s", r.status, r.body)
	}
}

func TestHandlerBatchData(t *testing.T) {
	a := setupAPI(t)
	body := `{"messages":[{"topic":"room:a","data":{"n":18446744073709551615}},{"topic":"room:b","payload":"eyJpIjoxfQ=="}]}`
	r := a.post(t, publisher.PathBatch, apiKey, "application/json", []byte(body))
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	// The batch's messages are published concurrently: look them up by
	// subject, not by sequence.
	for subj, want := range map[string]string{"fabric.room.a": `{"n":18446744073709551615}`, "fabric.room.b": `{"i":1}`} {
		if m, err := a.stream(t).GetLastMsgForSubject(ctxT(t), subj); err != nil || string(m.Data) != want {
			t.Fatalf("%s: %q %v, want %q", subj, m.Data, err, want)
		}
	}
	bad := `{"messages":[{"topic":"room:a","data":1},{"topic":"room:a","data":1,"payload":"e30="}]}`
	r = a.post(t, publisher.PathBatch, apiKey, "application/json", []byte(bad))
	if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "message 1: ") || a.stored(t) != 2 {
		t.Fatalf("bad batch: %d %s, stored %d", r.status, r.body, a.stored(t))
	}
}
