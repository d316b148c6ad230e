package phoenix

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// decodeCase is shared by the table test and the fuzz seeds.
type decodeCase struct {
	name   string
	v      Version
	binary bool
	data   string
	want   Frame
	// Exactly one of the following is set for failing cases.
	proto uint16           // expected ProtocolError code
	bad   *BadRequestError // expected BadRequestError (Reason not compared)
}

var decodeCases = []decodeCase{
	// --- v2 text, frames as phoenix.js 1.8 and Phoenix's server exchange them (docs/protocol.md)
	{name: "v2 heartbeat", v: V2, data: `[null,"12","phoenix","heartbeat",{}]`,
		want: Frame{JoinRef: Null, Ref: R("12"), Topic: "phoenix", Event: "heartbeat", Payload: []byte(`{}`)}},
	{name: "v2 join", v: V2, data: `["5","5","room:1","phx_join",{"token":"t","offset":3}]`,
		want: Frame{JoinRef: R("5"), Ref: R("5"), Topic: "room:1", Event: "phx_join", Payload: []byte(`{"token":"t","offset":3}`)}},
	{name: "v2 push", v: V2, data: `["5","8","room:1","new_msg",{"body":"hi"}]`,
		want: Frame{JoinRef: R("5"), Ref: R("8"), Topic: "room:1", Event: "new_msg", Payload: []byte(`{"body":"hi"}`)}},
	{name: "v2 leave", v: V2, data: `["5","9","room:1","phx_leave",{}]`,
		want: Frame{JoinRef: R("5"), Ref: R("9"), Topic: "room:1", Event: "phx_leave", Payload: []byte(`{}`)}},
	{name: "v2 null refs", v: V2, data: `[null,null,"t","e",{}]`,
		want: Frame{JoinRef: Null, Ref: Null, Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 empty strings", v: V2, data: `["","","","",{}]`,
		want: Frame{JoinRef: R(""), Ref: R(""), Topic: "", Event: "", Payload: []byte(`{}`)}},
	{name: "v2 whitespace", v: V2, data: " \t\r\n[ \"1\" , \"2\" ,\n\"t\" , \"e\" , { \"a\" : [ 1 , 2 ] } ] \n",
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`{ "a" : [ 1 , 2 ] }`)}},
	{name: "v2 escapes", v: V2, data: `["j\"1","r\\2","room:\u0041","\ud83d\ude00\n\/",{}]`,
		want: Frame{JoinRef: RawRef(`"j\"1"`), Ref: RawRef(`"r\\2"`), Topic: "room:A", Event: "😀\n/", Payload: []byte(`{}`)}},
	{name: "v2 surrogate pair", v: V2, data: `["1","2","\ud83d\ude00","e",{}]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "😀", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 lone surrogate in a ref is echoed", v: V2, data: `["\ud800","\udc00x","t","e",{}]`,
		want: Frame{JoinRef: RawRef(`"\ud800"`), Ref: RawRef(`"\udc00x"`), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 U+2028 in a ref is kept raw", v: V2, data: "[\"a\u2028\",\"2\",\"t\",\"e\",{}]",
		want: Frame{JoinRef: RawRef("\"a\u2028\""), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 numeric refs", v: V2, data: `[0,-1.5e3,"t","e",{}]`,
		want: Frame{JoinRef: RawRef("0"), Ref: RawRef("-1.5e3"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 object and array refs", v: V2, data: `[{"a": [1]} , [true],"t","e",{}]`,
		want: Frame{JoinRef: RawRef(`{"a": [1]}`), Ref: RawRef(`[true]`), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 non-ASCII", v: V2, data: `["1","2","sala:ñ","évé",{"x":"日本"}]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "sala:ñ", Event: "évé", Payload: []byte(`{"x":"日本"}`)}},
	{name: "v2 payload array", v: V2, data: `["1","2","t","e",[1,"x",null]]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`[1,"x",null]`)}},
	{name: "v2 payload string", v: V2, data: `["1","2","t","e","s"]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`"s"`)}},
	{name: "v2 payload number", v: V2, data: `["1","2","t","e",-1.5e+3]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`-1.5e+3`)}},
	{name: "v2 payload null", v: V2, data: `["1","2","t","e",null]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`null`)}},
	{name: "v2 extra elements ignored", v: V2, data: `["1","2","t","e",{},"extra",{"x":[1]}]`,
		want: Frame{JoinRef: R("1"), Ref: R("2"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},

	// --- v2 binary, golden bytes of Phoenix's binary serializer (phoenix.js serializer.js)
	{name: "v2 binary push golden", v: V2, binary: true,
		data: "\x00\x01\x02\x06\x03510room:1bin\x07\x07\x07",
		want: Frame{JoinRef: R("5"), Ref: R("10"), Topic: "room:1", Event: "bin", Payload: []byte{7, 7, 7}, Binary: true}},
	{name: "v2 binary empty fields", v: V2, binary: true, data: "\x00\x00\x00\x00\x00",
		want: Frame{JoinRef: R(""), Ref: R(""), Topic: "", Event: "", Payload: []byte{}, Binary: true}},
	{name: "v2 binary payload not utf8", v: V2, binary: true, data: "\x00\x01\x01\x01\x01abcd\xff\xfe",
		want: Frame{JoinRef: R("a"), Ref: R("b"), Topic: "c", Event: "d", Payload: []byte{0xff, 0xfe}, Binary: true}},

	// --- v1
	{name: "v1 with join_ref", v: V1, data: `{"topic":"room:1","event":"new_msg","payload":{"a":1},"ref":"8","join_ref":"5"}`,
		want: Frame{JoinRef: R("5"), Ref: R("8"), Topic: "room:1", Event: "new_msg", Payload: []byte(`{"a":1}`)}},
	{name: "v1 without join_ref", v: V1, data: `{"topic":"room:1","event":"phx_join","payload":{},"ref":"3"}`,
		want: Frame{JoinRef: R("3"), Ref: R("3"), Topic: "room:1", Event: "phx_join", Payload: []byte(`{}`)}},
	{name: "v1 null join_ref", v: V1, data: `{"join_ref":null,"ref":"3","topic":"phoenix","event":"heartbeat","payload":{}}`,
		want: Frame{JoinRef: Null, Ref: R("3"), Topic: "phoenix", Event: "heartbeat", Payload: []byte(`{}`)}},
	{name: "v1 null ref", v: V1, data: `{"topic":"t","event":"e","payload":{},"ref":null}`,
		want: Frame{JoinRef: Null, Ref: Null, Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v1 escaped key and extra keys", v: V1, data: `{"x":[1,{"y":2}],"\u0074opic":"a\tb","event":"e","payload":"p","ref":"1"}`,
		want: Frame{JoinRef: Null, Ref: R("1"), Topic: "a\tb", Event: "e", Payload: []byte(`"p"`)}},
	{name: "v1 duplicate key last wins", v: V1, data: `{"topic":"a","topic":"b","event":"e","payload":{},"ref":"1"}`,
		want: Frame{JoinRef: Null, Ref: R("1"), Topic: "b", Event: "e", Payload: []byte(`{}`)}},

	// --- protocol errors
	{name: "v1 binary frame", v: V1, binary: true, data: "\x00\x01\x02\x06\x03510room:1bin", proto: 1003},
	{name: "invalid utf8 text", v: V2, data: "[null,\"1\",\"t\xff\",\"e\",{}]", proto: 1007},
	{name: "invalid utf8 v1", v: V1, data: "{\"topic\":\"\xc3\",\"ref\":\"1\"}", proto: 1007},
	{name: "empty text", v: V2, data: ``, proto: 1007},
	{name: "not json", v: V2, data: `hello`, proto: 1007},
	{name: "truncated json", v: V2, data: `["1","2","t","e",{`, proto: 1007},
	{name: "trailing garbage", v: V2, data: `["1","2","t","e",{}]x`, proto: 1007},
	{name: "two values", v: V2, data: `[] []`, proto: 1007},
	{name: "trailing comma", v: V2, data: `["1","2","t","e",{},]`, proto: 1007},
	{name: "invalid payload json", v: V2, data: `["1","2","t","e",{"a":01}]`, proto: 1007},
	{name: "bad escape", v: V2, data: `["1","2","t\x","e",{}]`, proto: 1007},
	{name: "raw control char in string", v: V2, data: "[\"1\",\"2\",\"t\n\",\"e\",{}]", proto: 1007},
	{name: "v2 object not array", v: V2, data: `{"topic":"t","ref":"1"}`, proto: 1007},
	{name: "v2 scalar", v: V2, data: `"x"`, proto: 1007},
	{name: "v2 empty array", v: V2, data: `[]`, proto: 1007},
	{name: "v2 ref only", v: V2, data: `[null,"1"]`, proto: 1007},
	{name: "v2 ref number", v: V2, data: `[null,1,"t","e",{}]`,
		want: Frame{JoinRef: Null, Ref: RawRef("1"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v2 topic null", v: V2, data: `[null,"1",null,"e",{}]`, proto: 1007},
	{name: "v2 topic object", v: V2, data: `[null,"1",{},"e",{}]`, proto: 1007},
	{name: "v1 array not object", v: V1, data: `[null,"1","t","e",{}]`, proto: 1007},
	{name: "v1 missing topic", v: V1, data: `{"event":"e","payload":{},"ref":"1"}`, proto: 1007},
	{name: "v1 missing ref", v: V1, data: `{"topic":"t","event":"e","payload":{}}`, proto: 1007},
	{name: "v1 topic number", v: V1, data: `{"topic":1,"event":"e","payload":{},"ref":"1"}`, proto: 1007},
	{name: "v1 ref true", v: V1, data: `{"topic":"t","event":"e","payload":{},"ref":true}`,
		want: Frame{JoinRef: Null, Ref: RawRef("true"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v1 numeric join without join_ref", v: V1, data: `{"topic":"t","event":"phx_join","payload":{},"ref":0}`,
		want: Frame{JoinRef: RawRef("0"), Ref: RawRef("0"), Topic: "t", Event: "phx_join", Payload: []byte(`{}`)}},
	{name: "binary too short", v: V2, binary: true, data: "\x00\x01\x02\x06", proto: 1007},
	{name: "binary empty", v: V2, binary: true, data: "", proto: 1007},
	{name: "binary kind reply", v: V2, binary: true, data: "\x01\x00\x00\x00\x00", proto: 1007},
	{name: "binary kind broadcast", v: V2, binary: true, data: "\x02\x00\x00\x00\x00", proto: 1007},
	{name: "binary lengths past end", v: V2, binary: true, data: "\x00\x01\x02\x06\x04510room:1bin", proto: 1007},
	{name: "binary invalid utf8 topic", v: V2, binary: true, data: "\x00\x00\x00\x01\x01\xffe", proto: 1007},
	{name: "binary rune split across fields", v: V2, binary: true, data: "\x00\x00\x00\x01\x01\xc3\xa9", proto: 1007},

	// --- bad requests: ref and topic readable, shape wrong
	{name: "v2 four elements", v: V2, data: `["1","2","t","e"]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2"), Topic: "t"}},
	{name: "v2 three elements", v: V2, data: `[null,"2","t"]`,
		bad: &BadRequestError{JoinRef: Null, Ref: R("2"), Topic: "t"}},
	{name: "v2 event number", v: V2, data: `["1","2","t",7,{}]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2"), Topic: "t"}},
	{name: "v2 event null", v: V2, data: `["1","2","t",null,{}]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2"), Topic: "t"}},
	{name: "v2 lone surrogate topic", v: V2, data: `["1","2","room:\ud800","e",{}]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2")}},
	{name: "v2 lone low surrogate topic", v: V2, data: `["1","2","room:\udc00\ud800","e",{}]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2")}},
	{name: "v2 high surrogate then a letter", v: V2, data: `["1","2","room:\ud800\u0041","e",{}]`,
		bad: &BadRequestError{JoinRef: R("1"), Ref: R("2")}},
	{name: "v2 lone surrogate event", v: V2, data: `[1,"2","t","\udfff",{}]`,
		bad: &BadRequestError{JoinRef: RawRef("1"), Ref: R("2"), Topic: "t"}},
	{name: "v2 null ref bad shape", v: V2, data: `[null,null,"room:\u0041",{},{}]`,
		bad: &BadRequestError{JoinRef: Null, Ref: Null, Topic: "room:A"}},
	{name: "v1 missing payload", v: V1, data: `{"topic":"t","event":"e","ref":"1","join_ref":"9"}`,
		bad: &BadRequestError{JoinRef: R("9"), Ref: R("1"), Topic: "t"}},
	{name: "v1 missing event", v: V1, data: `{"topic":"t","payload":{},"ref":"1"}`,
		bad: &BadRequestError{JoinRef: Null, Ref: R("1"), Topic: "t"}},
	{name: "v1 join_ref number", v: V1, data: `{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":2}`,
		want: Frame{JoinRef: RawRef("2"), Ref: R("1"), Topic: "t", Event: "e", Payload: []byte(`{}`)}},
	{name: "v1 lone surrogate topic", v: V1, data: `{"topic":"\ud800","event":"e","payload":{},"ref":"1"}`,
		bad: &BadRequestError{JoinRef: Null, Ref: R("1")}},
}

func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.v, tc.binary, []byte(tc.data))
			switch {
			case tc.proto != 0:
				var pe *ProtocolError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v (%T), want *ProtocolError %d", err, err, tc.proto)
				}
				if pe.Code != tc.proto {
					t.Fatalf("code = %d (%s), want %d", pe.Code, pe.Reason, tc.proto)
				}
			case tc.bad != nil:
				var be *BadRequestError
				if !errors.As(err, &be) {
					t.Fatalf("err = %v (%T), want *BadRequestError", err, err)
				}
				if be.JoinRef != tc.bad.JoinRef || be.Ref != tc.bad.Ref || be.Topic != tc.bad.Topic || be.Reason == "" {
					t.Fatalf("got %+v, want %+v", be, tc.bad)
				}
			default:
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("got  %+v\nwant %+v", got, tc.want)
				}
			}
		})
	}
}

func TestDecodeUnsupportedVersion(t *testing.T) {
	for _, v := range []Version{0, 3, 255} {
		if _, err := Decode(v, false, []byte(`[null,"1","t","e",{}]`)); !errors.Is(err, ErrUnsupportedVsn) {
			t.Errorf("Decode(%d) err = %v, want ErrUnsupportedVsn", v, err)
		}
	}
}

// The read buffer is reused by the transport; decoded strings must survive it.
func TestDecodeStringsDoNotAliasInput(t *testing.T) {
	for _, data := range []string{
		`["join-1","ref-2","room:42","new_msg",{}]`,
		`{"topic":"room:42","event":"new_msg","payload":{},"ref":"ref-2","join_ref":"join-1"}`,
	} {
		v := V2
		if data[0] == '{' {
			v = V1
		}
		buf := []byte(data)
		f, err := Decode(v, false, buf)
		if err != nil {
			t.Fatal(err)
		}
		for i := range buf {
			buf[i] = 'X'
		}
		if f.JoinRef != R("join-1") || f.Ref != R("ref-2") || f.Topic != "room:42" || f.Event != "new_msg" {
			t.Fatalf("strings changed with the input buffer: %+v", f)
		}
	}
	buf := []byte("\x00\x01\x02\x06\x03510room:1bin\x07")
	f, err := Decode(V2, true, buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 'X'
	}
	if f.JoinRef != R("5") || f.Ref != R("10") || f.Topic != "room:1" || f.Event != "bin" {
		t.Fatalf("binary strings changed with the input buffer: %+v", f)
	}
}

// Padding between the fields must not make a ref pin a big slice of input.
func TestDecodeWhitespacePadding(t *testing.T) {
	pad := strings.Repeat(" ", 4096)
	f, err := Decode(V2, false, []byte(`["1",`+pad+`"2",`+pad+`"t","e",{}]`))
	if err != nil {
		t.Fatal(err)
	}
	if f.JoinRef != R("1") || f.Ref != R("2") || f.Topic != "t" || f.Event != "e" {
		t.Fatalf("got %+v", f)
	}
}

func TestDecodeDepth(t *testing.T) {
	nest := func(n int) []byte {
		return []byte(`["1","2","t","e",` + strings.Repeat("[", n) + strings.Repeat("]", n) + `]`)
	}
	// The outer array counts, as in encoding/json's limit of 10000.
	if _, err := Decode(V2, false, nest(maxDepth-1)); err != nil {
		t.Fatalf("depth %d: %v", maxDepth, err)
	}
	var pe *ProtocolError
	if _, err := Decode(V2, false, nest(maxDepth)); !errors.As(err, &pe) || pe.Code != 1007 {
		t.Fatalf("depth %d: err = %v, want 1007", maxDepth+1, err)
	}
	if json.Valid(nest(maxDepth)) || !json.Valid(nest(maxDepth-1)) {
		t.Fatal("encoding/json's nesting limit changed; update maxDepth")
	}
}

func TestParseVsn(t *testing.T) {
	cases := []struct {
		in   string
		want Version
		ok   bool
	}{
		{"", V1, true}, {"1.0.0", V1, true}, {"1.0.7", V1, true}, {"1.0.10", V1, true},
		{"2.0.0", V2, true}, {"2.0.3", V2, true},
		{"1.1.0", 0, false}, {"2.1.0", 0, false}, {"3.0.0", 0, false}, {"2.0", 0, false},
		{"2", 0, false}, {"2.0.", 0, false}, {"2.0.x", 0, false}, {"2.0.01", 0, false},
		{"2.0.0-rc.1", 0, false}, {" 2.0.0", 0, false}, {"v2.0.0", 0, false},
	}
	for _, c := range cases {
		got, err := ParseVsn(c.in)
		if c.ok && (err != nil || got != c.want) {
			t.Errorf("ParseVsn(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if !c.ok && !errors.Is(err, ErrUnsupportedVsn) {
			t.Errorf("ParseVsn(%q) err = %v, want ErrUnsupportedVsn", c.in, err)
		}
	}
}

func TestAppendMessageV2(t *testing.T) {
	cases := []struct {
		joinRef, ref Ref
		topic, event string
		payload      []byte
		want         string
	}{
		{Null, Null, "room:1", "news", []byte(`{"n":1}`), `[null,null,"room:1","news",{"n":1}]`},
		{R("5"), Null, "room:1", "direct", []byte(`{"n":2}`), `["5",null,"room:1","direct",{"n":2}]`},
		{R("5"), R("5"), "room:1", EventError, nil, `["5","5","room:1","phx_error",{}]`},
		{R("5"), R("5"), "room:1", EventClose, []byte{}, `["5","5","room:1","phx_close",{}]`},
	}
	for _, c := range cases {
		got := string(AppendMessage(nil, V2, c.joinRef, c.ref, c.topic, c.event, c.payload))
		if got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

func TestAppendMessageV1(t *testing.T) {
	got := AppendMessage(nil, V1, R("5"), R("8"), "room:1", "new_msg", []byte(`{"a":[1]}`))
	var m map[string]any
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatalf("%s: %v", got, err)
	}
	want := map[string]any{"topic": "room:1", "event": "new_msg", "payload": map[string]any{"a": []any{1.0}}, "ref": "8"}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	got = AppendMessage(nil, V1, R("5"), Null, "room:1", "news", nil)
	if string(got) != `{"topic":"room:1","event":"news","payload":{},"ref":null}` {
		t.Fatalf("got %s", got)
	}
}

func TestAppendReply(t *testing.T) {
	got := string(AppendReply(nil, V2, Null, R("12"), TopicPhoenix, "ok", nil))
	if want := `[null,"12","phoenix","phx_reply",{"status":"ok","response":{}}]`; got != want {
		t.Errorf("heartbeat reply: got %s, want %s", got, want)
	}
	got = string(AppendReply(nil, V2, Null, R("3"), "nope:1", "error", []byte(`{"reason":"unmatched topic"}`)))
	if want := `[null,"3","nope:1","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]`; got != want {
		t.Errorf("unmatched reply: got %s, want %s", got, want)
	}
	v1 := AppendReply(nil, V1, R("5"), R("8"), "room:1", "ok", []byte(`{"x":1}`))
	var m map[string]any
	if err := json.Unmarshal(v1, &m); err != nil {
		t.Fatalf("%s: %v", v1, err)
	}
	want := map[string]any{"topic": "room:1", "event": "phx_reply", "ref": "8",
		"payload": map[string]any{"status": "ok", "response": map[string]any{"x": 1.0}}}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("v1 reply: got %v, want %v", m, want)
	}
	// A reply decodes as a message too, so the session and tests can share a parser.
	f, err := Decode(V2, false, AppendReply(nil, V2, R("5"), R("8"), "room:1", "ok", nil))
	if err != nil || f.Event != EventReply || f.JoinRef != R("5") || f.Ref != R("8") {
		t.Fatalf("decode reply: %+v, %v", f, err)
	}
}

func TestAppendStringEscaping(t *testing.T) {
	for _, s := range []string{
		"", "plain", `q"uote`, `back\slash`, "ctl\x00\x01\x1f\x7f", "\b\f\n\r\t", "<html>&",
		"日本語 😀", "bad\xffutf8\xc3", "\u2028\u2029", "\xed\xa0\x80", // encoded surrogate: invalid UTF-8
	} {
		out := appendString(nil, s)
		var back string
		if err := json.Unmarshal(out, &back); err != nil {
			t.Errorf("%q encoded as %s: not JSON: %v", s, out, err)
			continue
		}
		want, _ := json.Marshal(s)
		var wantBack string
		_ = json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Errorf("%q: round trip %q, encoding/json gives %q", s, back, wantBack)
		}
		if strings.Contains(s, "<") && !bytes.Contains(out, []byte("<")) {
			t.Errorf("%q: HTML-escaped: %s", s, out)
		}
	}
}

func TestAppendNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 512)
	payload := []byte(`{"body":"hello"}`)
	allocs := testing.AllocsPerRun(100, func() {
		b := AppendMessage(buf[:0], V2, Null, Null, "room:1", "new_msg", payload)
		b = AppendReply(b, V1, R("1"), R("2"), "room:1", "ok", nil)
		b = AppendBase64Payload(b, payload)
		b, _ = AppendBinaryPush(b, R("1"), "room:1", "bin", payload)
		b, _ = AppendBinaryReply(b, R("1"), R("2"), "room:1", "ok", payload)
		_, _ = AppendBinaryBroadcast(b, "room:1", "bin", payload)
	})
	if allocs != 0 {
		t.Fatalf("allocs = %v, want 0", allocs)
	}
}

func TestDecodeAllocs(t *testing.T) {
	cases := []struct {
		name   string
		v      Version
		binary bool
		data   string
		max    float64
	}{
		{"heartbeat", V2, false, `[null,"12","phoenix","heartbeat",{}]`, 1},
		{"join", V2, false, `["5","5","room:1","phx_join",{"token":"abc"}]`, 1},
		{"push", V2, false, `["5","8","room:1","new_msg",{"body":"hi"}]`, 1},
		{"binary", V2, true, "\x00\x01\x02\x06\x03510room:1bin\x07\x07\x07", 1},
		{"v1 heartbeat", V1, false, `{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"12"}`, 1},
	}
	for _, c := range cases {
		data := []byte(c.data)
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := Decode(c.v, c.binary, data); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > c.max {
			t.Errorf("%s: allocs = %v, want <= %v", c.name, allocs, c.max)
		}
	}
}

func TestBase64Payload(t *testing.T) {
	got := string(AppendBase64Payload(nil, []byte{0, 1, 2, 0xff}))
	if want := `{"base64":"AAEC/w=="}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if got := string(AppendBase64Payload(nil, nil)); got != `{"base64":""}` {
		t.Fatalf("empty: got %s", got)
	}
}

func TestBinaryEncoders(t *testing.T) {
	payload := []byte{7, 7, 7}
	got, err := AppendBinaryPush([]byte("prefix"), R("5"), "room:1", "bin", payload)
	if want := "prefix\x00\x01\x06\x035room:1bin\x07\x07\x07"; err != nil || string(got) != want {
		t.Errorf("push: %q, %v; want %q", got, err, want)
	}
	got, err = AppendBinaryPush(nil, Null, "t", "e", nil)
	if want := "\x00\x00\x01\x01te"; err != nil || string(got) != want {
		t.Errorf("push null join_ref: %q, %v; want %q", got, err, want)
	}
	got, err = AppendBinaryReply(nil, R("5"), R("10"), "room:1", "ok", payload)
	if want := "\x01\x01\x02\x06\x02510room:1ok\x07\x07\x07"; err != nil || string(got) != want {
		t.Errorf("reply: %q, %v; want %q", got, err, want)
	}
	got, err = AppendBinaryBroadcast(nil, "room:1", "bin", payload)
	if want := "\x02\x06\x03room:1bin\x07\x07\x07"; err != nil || string(got) != want {
		t.Errorf("broadcast: %q, %v; want %q", got, err, want)
	}

	long := strings.Repeat("x", 256)
	max := strings.Repeat("x", 255)
	if _, err := AppendBinaryPush(nil, R(max), max, max, nil); err != nil {
		t.Errorf("255-byte fields: %v", err)
	}
	checks := []func() ([]byte, error){
		func() ([]byte, error) { return AppendBinaryPush([]byte("keep"), R(long), "t", "e", nil) },
		func() ([]byte, error) { return AppendBinaryPush([]byte("keep"), Null, long, "e", nil) },
		func() ([]byte, error) { return AppendBinaryPush([]byte("keep"), Null, "t", long, nil) },
		func() ([]byte, error) { return AppendBinaryReply([]byte("keep"), R(long), R("1"), "t", "ok", nil) },
		func() ([]byte, error) { return AppendBinaryReply([]byte("keep"), R("1"), R(long), "t", "ok", nil) },
		func() ([]byte, error) { return AppendBinaryReply([]byte("keep"), R("1"), R("1"), long, "ok", nil) },
		func() ([]byte, error) { return AppendBinaryReply([]byte("keep"), R("1"), R("1"), "t", long, nil) },
		func() ([]byte, error) { return AppendBinaryBroadcast([]byte("keep"), long, "e", nil) },
		func() ([]byte, error) { return AppendBinaryBroadcast([]byte("keep"), "t", long, nil) },
	}
	for i, f := range checks {
		got, err := f()
		if !errors.Is(err, ErrFieldTooLong) || string(got) != "keep" {
			t.Errorf("check %d: %q, %v; want dst unchanged and ErrFieldTooLong", i, got, err)
		}
	}
	// Multi-byte text is measured in bytes, as the 1.8.12+ client does.
	if _, err := AppendBinaryBroadcast(nil, strings.Repeat("é", 128), "e", nil); !errors.Is(err, ErrFieldTooLong) {
		t.Errorf("256-byte UTF-8 topic: err = %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	frames := []Frame{
		{JoinRef: Null, Ref: R("12"), Topic: "phoenix", Event: "heartbeat", Payload: []byte(`{}`)},
		{JoinRef: R("5"), Ref: R("5"), Topic: "room:1", Event: "phx_join", Payload: []byte(`{"p":[1,2,{"q":null}]}`)},
		{JoinRef: RawRef(`"a\"b\\c"`), Ref: Null, Topic: "ctl\x00\t\u2028", Event: "日本 😀", Payload: []byte(`"s"`)},
		{JoinRef: R(""), Ref: R(""), Topic: "", Event: "", Payload: []byte(`0`)},
	}
	for _, want := range frames {
		for _, v := range []Version{V1, V2} {
			got, err := Decode(v, false, AppendMessage(nil, v, want.JoinRef, want.Ref, want.Topic, want.Event, want.Payload))
			if err != nil {
				t.Fatalf("v%d %+v: %v", v, want, err)
			}
			w := want
			if v == V1 {
				// v1 never writes join_ref; only a join falls back to its ref.
				w.JoinRef = Null
				if w.Event == EventJoin {
					w.JoinRef = w.Ref
				}
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("v%d:\n got  %+v\n want %+v", v, got, w)
			}
		}
	}
}

func TestErrorMessages(t *testing.T) {
	pe := &ProtocolError{Code: 1007, Reason: "x"}
	if pe.Error() != "phoenix: protocol error 1007: x" {
		t.Errorf("got %q", pe.Error())
	}
	be := &BadRequestError{Topic: "t", Reason: "y"}
	if !strings.Contains(be.Error(), `"t"`) || !strings.Contains(be.Error(), "y") {
		t.Errorf("got %q", be.Error())
	}
	if Null.String() != "null" || R(`a"`).String() != `"a\""` {
		t.Errorf("Ref.String: %s %s", Null, R(`a"`))
	}
}

// Phoenix accepts any JSON value as a ref and echoes it unchanged; so must
// the reply, byte for byte (community clients send numbers).
func TestRawRefsEchoedExactly(t *testing.T) {
	for _, in := range []string{
		`[0,0,"room:1","e",{}]`,
		`[-1.50e+3,"8","room:1","e",{}]`,
		`[null,{"k" : [1,"x"]},"room:1","e",{}]`,
		`["\u0035","\ud800","room:1","e",{}]`,
		"[\"a\u2028\",true,\"room:1\",\"e\",{}]",
	} {
		f, err := Decode(V2, false, []byte(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var elems []json.RawMessage
		if err := json.Unmarshal([]byte(in), &elems); err != nil {
			t.Fatal(err)
		}
		got := string(AppendReply(nil, V2, f.JoinRef, f.Ref, f.Topic, "ok", nil))
		want := "[" + string(elems[0]) + "," + string(elems[1]) + `,"room:1","phx_reply",{"status":"ok","response":{}}]`
		if got != want {
			t.Errorf("reply to %s:\n got  %s\n want %s", in, got, want)
		}
	}
}

func TestRefText(t *testing.T) {
	for _, c := range []struct {
		r    Ref
		want string
	}{
		{Null, ""}, {R("5"), "5"}, {RawRef("0"), "0"}, {RawRef(`"\u0035\n"`), "5\n"}, {RawRef("true"), "true"},
	} {
		if got := c.r.Text(); got != c.want {
			t.Errorf("%v.Text() = %q, want %q", c.r, got, c.want)
		}
	}
	// A binary reply to a numeric ref carries its digits, as Phoenix's
	// to_string does.
	b, err := AppendBinaryReply(nil, RawRef("7"), RawRef("12"), "t", "ok", []byte{1})
	if err != nil || string(b) != "\x01\x01\x02\x01\x02712tok\x01" {
		t.Fatalf("binary reply %q, %v", b, err)
	}
}

// A topic that cannot be decoded is refused, but the reply still names it
// as sent so the client's channel gets it.
func TestUndecodableTopicReply(t *testing.T) {
	_, err := Decode(V2, false, []byte(`["3","3","room:\ud800","phx_join",{}]`))
	var be *BadRequestError
	if !errors.As(err, &be) || be.Field != FieldTopic || be.TopicJSON != `"room:\ud800"` {
		t.Fatalf("err = %#v", err)
	}
	got := string(AppendReplyJSONTopic(nil, V2, be.JoinRef, be.Ref, be.TopicJSON, "error", []byte(`{"reason":"invalid_topic"}`)))
	if want := `["3","3","room:\ud800","phx_reply",{"status":"error","response":{"reason":"invalid_topic"}}]`; got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	got = string(AppendReplyJSONTopic(nil, V1, be.JoinRef, be.Ref, be.TopicJSON, "error", nil))
	if want := `{"topic":"room:\ud800","event":"phx_reply","payload":{"status":"error","response":{}},"ref":"3"}`; got != want {
		t.Fatalf("v1: got  %s\nwant %s", got, want)
	}
}

func TestCheckClientEvent(t *testing.T) {
	for _, c := range []struct {
		event string
		want  error
	}{
		{"new_msg", nil}, {"message", nil}, {"phx", nil}, {"presence", nil}, {"chan_reply", nil},
		{"presence_diffs", nil}, {"fabric", nil}, {"日本", nil}, {strings.Repeat("e", 255), nil},
		{"phx_reply", ErrReservedEvent}, {"phx_join", ErrReservedEvent}, {"phx_foo", ErrReservedEvent},
		{"chan_reply_12", ErrReservedEvent}, {"chan_reply_", ErrReservedEvent},
		{"presence_state", ErrReservedEvent}, {"presence_diff", ErrReservedEvent},
		{"fabric:offset", ErrReservedEvent}, {"fabric:x", ErrReservedEvent},
		{"", ErrInvalidEvent}, {strings.Repeat("e", 256), ErrInvalidEvent}, {" x", ErrInvalidEvent},
		{"x\n", ErrInvalidEvent}, {"a\x00b", ErrInvalidEvent}, {"a\x7fb", ErrInvalidEvent},
	} {
		if got := CheckClientEvent(c.event); got != c.want {
			t.Errorf("CheckClientEvent(%q) = %v, want %v", c.event, got, c.want)
		}
	}
}

func TestAppendHeadPlusPayloadIsAppendMessage(t *testing.T) {
	for _, jr := range []Ref{Null, R("7"), R(`q"uote`)} {
		payload := []byte(`{"a":{"metas":[{"phx_ref":"x"}]}}`)
		want := AppendMessage(nil, V2, jr, Null, "room:ü\"1", "presence_state", payload)
		got := append(append(AppendHead(nil, jr, Null, "room:ü\"1", "presence_state"), payload...), ']')
		if string(got) != string(want) {
			t.Errorf("head+payload+] = %s, want %s", got, want)
		}
	}
}
