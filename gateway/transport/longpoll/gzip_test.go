package longpoll

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// rawGet polls with the given Accept-Encoding and returns the response and
// its body as sent (the client does not decompress what it asked for
// itself).
func rawGet(t *testing.T, u, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, b
}

// TestPollGzip: with Gzip on, a poll answer over GzipMin goes gzipped to a
// client that accepts it and decodes to what a plain poll carries; a small
// one, or one to a client that does not accept gzip, goes plain.
func TestPollGzip(t *testing.T) {
	cfg := fast()
	cfg.Gzip, cfg.GzipMin = true, 256
	h := newHarness(t, cfg)
	tok := h.open()
	big := `[null,"7","room:1","state",{"text":"` + strings.Repeat("a compressible sentence ", 40) + `"}]`
	send := func(frame string) { h.session(0).conn.Send(transport.NewText([]byte(frame))) }

	send(big)
	res, body := rawGet(t, h.url+"?"+tq(tok), "gzip, deflate, br")
	if res.Header.Get("Content-Encoding") != "gzip" || len(body) >= len(big) {
		t.Fatalf("Content-Encoding %q, %d bytes for a %d-byte frame", res.Header.Get("Content-Encoding"), len(body), len(big))
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var p pollResp
	if err := json.Unmarshal(plain, &p); err != nil || p.Status != 200 || len(p.Messages) != 1 || p.Messages[0] != big {
		t.Fatalf("gunzipped answer %s: %v", plain, err)
	}
	t.Logf("poll answer: %d bytes plain, %d gzipped", len(plain), len(body))

	for _, tc := range []struct{ frame, accept string }{{big, ""}, {big, "gzip;q=0, identity"}, {`[null,"8","room:1","x",{}]`, "gzip"}} {
		send(tc.frame)
		res, body := rawGet(t, h.url+"?"+tq(tok), tc.accept)
		if res.Header.Get("Content-Encoding") != "" || !strings.Contains(string(body), "room:1") {
			t.Fatalf("Accept-Encoding %q, %d-byte frame: Content-Encoding %q", tc.accept, len(tc.frame), res.Header.Get("Content-Encoding"))
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false,
		"gzip; q=0.0, br": false, "br, identity": false, "x-gzip": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if v != "" {
			r.Header.Set("Accept-Encoding", v)
		}
		if got := acceptsGzip(r); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", v, got, want)
		}
	}
}

// BenchmarkPollGzip writes one poll answer of 8 game-state broadcasts
// (about 4 KiB of JSON with varying numbers), plain or gzipped: the
// per-answer cost LongPoll pays, and the bytes.
func BenchmarkPollGzip(b *testing.B) {
	var frames [][]byte
	for i := range 8 {
		var f strings.Builder
		fmt.Fprintf(&f, `[null,"%d","room:match","state",{"players":[`, i)
		for j := range 6 {
			if j > 0 {
				f.WriteByte(',')
			}
			fmt.Fprintf(&f, `{"id":"p%d","x":%d.%d,"y":%d.%d,"hp":%d}`, j, (i*131+j*17)%1000, (i*7+j)%100, (i*71+j*29)%1000, (j*13+i)%100, (i*j*37)%101)
		}
		f.WriteString(`]}]`)
		frames = append(frames, []byte(f.String()))
	}
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			var n int
			for range b.N {
				rec := httptest.NewRecorder()
				var w http.ResponseWriter = rec
				if gz {
					w = &gzipPoll{ResponseWriter: rec, min: 256, status: http.StatusOK}
				}
				writePoll(w, 200, "tok", frames)
				n = rec.Body.Len()
			}
			b.ReportMetric(float64(n), "B/answer")
		})
	}
}
