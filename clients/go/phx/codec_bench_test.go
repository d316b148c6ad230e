package phx

import "testing"

var benchFrame = []byte(`[null,"104234","room:lobby","new_msg",{"user":"ada","body":"hello there, how is everyone today?","n":42}]`)

func BenchmarkDecodeText(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		f, err := decodeText(benchFrame)
		if err != nil || f.ref == "" {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendText(b *testing.B) {
	payload := []byte(`{"body":"hello there"}`)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendText(buf[:0], "12", "9876", "room:lobby", "new_msg", payload)
	}
}

// The baseline: the same frame through encoding/json only.
func BenchmarkDecodeTextSlow(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		f, err := decodeTextSlow(benchFrame)
		if err != nil || f.ref == "" {
			b.Fatal(err)
		}
	}
}
