package phoenix

import (
	"encoding/json"
	"testing"
)

func benchDecode(b *testing.B, v Version, binary bool, msg string) {
	data := []byte(msg)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(v, binary, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeHeartbeat(b *testing.B) {
	benchDecode(b, V2, false, `[null,"1234","phoenix","heartbeat",{}]`)
}

func BenchmarkDecodeJoin(b *testing.B) {
	benchDecode(b, V2, false, `["5","5","room:lobby","phx_join",{"token":"abc.def.ghi","offset":"42-0"}]`)
}

func BenchmarkDecodePush(b *testing.B) {
	benchDecode(b, V2, false, `["5","1234","room:lobby","new_msg",{"body":"hello, world","n":[1,2,3]}]`)
}

func BenchmarkDecodeJoinV1(b *testing.B) {
	benchDecode(b, V1, false, `{"topic":"room:lobby","event":"phx_join","payload":{"token":"abc.def.ghi"},"ref":"5","join_ref":"5"}`)
}

func BenchmarkDecodeBinaryPush(b *testing.B) {
	benchDecode(b, V2, true, "\x00\x01\x02\x06\x03510room:1bin\x07\x07\x07")
}

func BenchmarkAppendBroadcast(b *testing.B) {
	payload := []byte(`{"user":"alice","body":"hello, world","at":1712345678}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendMessage(buf[:0], V2, Null, Null, "room:lobby", "new_msg", payload)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendReplyHeartbeat(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendReply(buf[:0], V2, Null, R("1234"), TopicPhoenix, "ok", nil)
	}
}

// BenchmarkDecodePushEncodingJSON is the baseline for BenchmarkDecodePush:
// the obvious decoder (encoding/json into the five elements) doing the same
// work — string fields extracted, payload kept raw.
func BenchmarkDecodePushEncodingJSON(b *testing.B) {
	data := []byte(`["5","1234","room:lobby","new_msg",{"body":"hello, world","n":[1,2,3]}]`)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var a []json.RawMessage
		if err := json.Unmarshal(data, &a); err != nil || len(a) != 5 {
			b.Fatal(err)
		}
		var jr, ref *string
		var topic, event string
		json.Unmarshal(a[0], &jr)
		json.Unmarshal(a[1], &ref)
		json.Unmarshal(a[2], &topic)
		json.Unmarshal(a[3], &event)
		_ = a[4]
	}
}
