package phx

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestTextRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		joinRef, ref, topic, event string
		payload                    string
	}{
		{"1", "2", "room:lobby", "new_msg", `{"body":"hi"}`},
		{"", "7", "phoenix", "heartbeat", `{}`},
		{"", "", "room:é\"\\\n\t\x01", "ev", `{"a":[1,2,{"b":null}]}`},
	} {
		b := appendText(nil, tc.joinRef, tc.ref, tc.topic, tc.event, []byte(tc.payload))
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %s", b)
		}
		f, err := decodeText(b)
		if err != nil {
			t.Fatal(err)
		}
		if f.joinRef != tc.joinRef || f.ref != tc.ref || f.topic != tc.topic || f.event != tc.event || string(f.payload) != tc.payload {
			t.Fatalf("round trip of %+v gave %+v", tc, f)
		}
	}
	// nil payload is {}, null refs are null.
	if got := string(appendText(nil, "", "", "t", "e", nil)); got != `[null,null,"t","e",{}]` {
		t.Fatalf("got %s", got)
	}
	// Invalid UTF-8 becomes U+FFFD, like encoding/json.
	if got := string(appendString(nil, "a\xffb")); got != `"a\ufffdb"` {
		t.Fatalf("got %s", got)
	}
}

// Refs are any JSON value on the wire: numbers come back as their text.
func TestDecodeTextRefs(t *testing.T) {
	f, err := decodeText([]byte(`[3, 12, "room:1", "phx_reply", {"status":"ok","response":{}}, "extra"]`))
	if err != nil {
		t.Fatal(err)
	}
	if f.joinRef != "3" || f.ref != "12" || f.event != "phx_reply" {
		t.Fatalf("%+v", f)
	}
	for _, bad := range []string{`{}`, `[null,null,"t"]`, `[null,null,1,"e",{}]`, `not json`} {
		if _, err := decodeText([]byte(bad)); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

// decodeClientPush parses the client's binary push (kind 0, 5-byte header),
// the way a server does.
func decodeClientPush(t *testing.T, p []byte) (joinRef, ref, topic, event string, payload []byte) {
	t.Helper()
	if len(p) < 5 || p[0] != kindPush {
		t.Fatalf("not a push: %v", p)
	}
	off := 5
	next := func(n byte) string {
		s := string(p[off : off+int(n)])
		off += int(n)
		return s
	}
	joinRef, ref, topic, event = next(p[1]), next(p[2]), next(p[3]), next(p[4])
	return joinRef, ref, topic, event, p[off:]
}

func TestBinaryPush(t *testing.T) {
	// The example from the protocol notes: join_ref "5", ref "10",
	// topic "room:1", event "bin", payload 07 07 07.
	b, err := appendBinaryPush(nil, "5", "10", "room:1", "bin", []byte{7, 7, 7})
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{0, 1, 2, 6, 3, '5', '1', '0', 'r', 'o', 'o', 'm', ':', '1', 'b', 'i', 'n', 7, 7, 7}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x", b)
	}
	jr, r, topic, ev, pl := decodeClientPush(t, b)
	if jr != "5" || r != "10" || topic != "room:1" || ev != "bin" || !bytes.Equal(pl, []byte{7, 7, 7}) {
		t.Fatal("round trip")
	}
	if _, err := appendBinaryPush(nil, "1", "2", strings.Repeat("t", 256), "e", nil); err != errFieldTooLong {
		t.Fatalf("256-byte topic: %v", err)
	}
}

func TestDecodeBinary(t *testing.T) {
	// Server push, 4-byte header, no ref.
	f, err := decodeBinary([]byte("\x00\x01\x06\x03" + "5" + "room:1" + "bin" + "\x01\x02"))
	if err != nil || f.joinRef != "5" || f.ref != "" || f.topic != "room:1" || f.event != "bin" || string(f.binary) != "\x01\x02" {
		t.Fatalf("push: %+v %v", f, err)
	}
	// Reply, 5-byte header with status.
	f, err = decodeBinary([]byte("\x01\x01\x02\x06\x02" + "5" + "10" + "room:1" + "ok" + "\xff"))
	if err != nil || f.joinRef != "5" || f.ref != "10" || f.event != eventReply || f.status != "ok" || string(f.binary) != "\xff" {
		t.Fatalf("reply: %+v %v", f, err)
	}
	if r := parseReply(f); r.Status != "ok" || string(r.Binary) != "\xff" || r.Response != nil {
		t.Fatalf("reply: %+v", r)
	}
	// Broadcast, 3-byte header; an empty payload is fine.
	f, err = decodeBinary([]byte("\x02\x06\x03" + "room:1" + "bin"))
	if err != nil || f.joinRef != "" || f.topic != "room:1" || f.event != "bin" || len(f.binary) != 0 {
		t.Fatalf("broadcast: %+v %v", f, err)
	}
	for _, bad := range []string{"", "\x03", "\x02\x06", "\x02\x06\x03room", "\x01\x01\x02\x06\x02" + "5"} {
		if _, err := decodeBinary([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

func TestOffsets(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want uint64
		ok   bool
	}{{`42`, 42, true}, {`"42"`, 42, true}, {`"18446744073709551615"`, 1<<64 - 1, true}, {`null`, 0, false}, {`-1`, 0, false}, {`"x"`, 0, false}, {``, 0, false}} {
		n, ok := parseOffset(json.RawMessage(tc.raw))
		if n != tc.want || ok != tc.ok {
			t.Errorf("parseOffset(%s) = %d %v", tc.raw, n, ok)
		}
	}
	// fabric:offset: the object payload (string or number), else the ref
	// slot (null payload, as gateways before the object form sent).
	for _, tc := range []struct {
		frame string
		want  uint64
	}{
		{`[null,"7","room:a","fabric:offset",{"offset":"7"}]`, 7},
		{`[null,"7","room:a","fabric:offset",{"offset":7}]`, 7},
		{`[null,"7","room:a","fabric:offset",null]`, 7},
		{`[null,null,"room:a","fabric:offset",{"offset":"9"}]`, 9},
	} {
		f, err := decodeText([]byte(tc.frame))
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := offsetFrame(f); !ok || n != tc.want {
			t.Errorf("%s: %d %v", tc.frame, n, ok)
		}
	}
	if _, ok := refOffset("phx_5"); ok {
		t.Error("non-numeric ref taken as an offset")
	}
}

func TestMarshalObject(t *testing.T) {
	for _, ok := range []any{nil, map[string]int{"a": 1}, json.RawMessage(` {"x":1}`), struct{ A int }{1}} {
		if _, err := marshalObject(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range []any{1, "s", []int{1}, json.RawMessage(`null`)} {
		if _, err := marshalObject(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"ws://h:1/socket":          "ws://h:1/socket/websocket",
		"https://h/socket/":        "wss://h/socket/websocket",
		"wss://h/socket/websocket": "wss://h/socket/websocket",
		"http://h/socket?x=1":      "ws://h/socket/websocket?x=1",
	} {
		u, err := endpointURL(in)
		if err != nil || u.String() != want {
			t.Errorf("%s: %v %v", in, u, err)
		}
	}
	if _, err := endpointURL("ftp://h/socket"); err == nil {
		t.Error("ftp accepted")
	}
}
