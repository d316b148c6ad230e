package bench

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"image/png"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

func TestHistIndexBounds(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 12345, 1 << 20, 1<<36 - 1} {
		i := histIndex(v)
		if i < prev || i >= HistBuckets {
			t.Fatalf("histIndex(%d) = %d (previous %d, buckets %d)", v, i, prev, HistBuckets)
		}
		prev = i
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if v >= 64 && float64(hi-lo+1)/float64(lo) > 1.0/32+1e-9 {
			t.Errorf("bucket %d [%d, %d] wider than 1/32", i, lo, hi)
		}
	}
	if histIndex(-5) != 0 || histIndex(1<<40) != histIndex(1<<36-1) {
		t.Error("out-of-range values are not clamped")
	}
}

func TestHistQuantiles(t *testing.T) {
	var h Hist
	for v := int64(1); v <= 1000; v++ {
		h.Add(v)
	}
	c := NewCounts()
	c.AddSparse(h.Sparse())
	if c.Total() != 1000 {
		t.Fatalf("total %d", c.Total())
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {0.999, 999}} {
		if got := c.Quantile(tc.q); got < tc.want*0.97 || got > tc.want*1.03 {
			t.Errorf("q%.3f = %.1f, want ≈ %.0f", tc.q, got, tc.want)
		}
	}
	base := NewCounts()
	base.AddSparse([][2]int64{{int64(histIndex(10)), 1}})
	if d := c.Sub(base); d.Total() != 999 {
		t.Errorf("Sub total %d", d.Total())
	}
	if NewCounts().Quantile(0.5) != 0 || NewCounts().Max() != 0 {
		t.Error("empty histogram")
	}
	if allocs := testing.AllocsPerRun(100, func() { h.Add(12345) }); allocs != 0 {
		t.Errorf("Hist.Add allocates %.0f times", allocs)
	}
}

func TestCPUTime(t *testing.T) {
	if ClockTicks() <= 0 {
		t.Fatal("no clock ticks")
	}
	end := time.Now().Add(30 * time.Millisecond)
	for time.Now().Before(end) {
	}
	if _, err := CPUTime(-1); err == nil {
		t.Error("CPUTime(-1): want an error")
	}
	d, err := CPUTime(os.Getpid())
	if err != nil || d < 0 {
		t.Fatalf("CPUTime = %v, %v", d, err)
	}
}

// TestWorkerRecord feeds a worker Phoenix frames and a NATS protocol
// stream split at awkward places and checks the deliveries counted.
func TestWorkerRecord(t *testing.T) {
	w := &worker{o: ClientOptions{Mode: ModeNATSWS}}
	now := time.Now().UnixNano()
	payload := func(ago time.Duration) string {
		return TimestampKey + strconv.FormatInt(now-int64(ago), 10) + `,"seq":1,"pad":"xx"}`
	}
	w.record([]byte(`[null,null,"bench:fanout","message",`+payload(2*time.Millisecond)+`]`), now)
	w.record([]byte(`[null,"5","phoenix","phx_reply",{"status":"ok","response":{}}]`), now)
	if w.delivered.Load() != 1 {
		t.Fatalf("phoenix: delivered %d, want 1", w.delivered.Load())
	}

	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() { // swallow the PONG the worker writes
		b := make([]byte, 64)
		for {
			if _, err := server.Read(b); err != nil {
				return
			}
		}
	}()
	c := &benchConn{nc: client, rd: client}
	p := payload(time.Millisecond)
	stream := "INFO {}\r\nMSG fabric.bench.fanout 1 " + strconv.Itoa(len(p)) + "\r\n" + p + "\r\nPING\r\n" +
		"MSG fabric.bench.fanout 1 " + strconv.Itoa(len(p)) + "\r\n" + p + "\r\n"
	var pend []byte
	for i := 0; i < len(stream); i += 7 { // 7-byte frames
		end := min(i+7, len(stream))
		pend = append(pend, stream[i:end]...)
		n, err := w.natsStream(c, pend, now)
		if err != nil {
			t.Fatal(err)
		}
		pend = pend[:copy(pend, pend[n:])]
	}
	if len(pend) != 0 || w.delivered.Load() != 3 {
		t.Errorf("nats: delivered %d, want 3; %d bytes left", w.delivered.Load(), len(pend))
	}
	h := NewCounts()
	h.AddSparse(w.lat.Sparse())
	if got := h.Quantile(1); got < 1800 || got > 2100 {
		t.Errorf("max latency %.0f µs, want ≈ 2000", got)
	}
}

func TestPlot(t *testing.T) {
	in := `{"bench":"fanout","systems":[{"system":"fabric","n":5000,"rss_per_conn_bytes":9000,"rate":{"deliveries_per_s":50000},"saturate":{"deliveries_per_s":90000}},{"system":"nats-ws","n":5000,"rss_per_conn_bytes":42000,"rate":{"deliveries_per_s":50000}}]}
{"bench":"fanout","systems":[{"system":"fabric","n":10000,"rss_per_conn_bytes":8000,"saturate":{"deliveries_per_s":95000}},{"system":"nats-ws","n":10000,"rss_per_conn_bytes":41000,"saturate":{"deliveries_per_s":120000}}]}
{"bench":"storm","systems":[{"system":"fabric","n":15000,"rss_per_conn_bytes":8500}]}
`
	b, err := Plot([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if img.Bounds().Dx() < 600 || img.Bounds().Dy() < 300 {
		t.Errorf("image %v", img.Bounds())
	}
	if _, err := Plot([]byte("{}\n")); err == nil {
		t.Error("Plot with no results: want an error")
	}
	if _, err := Plot([]byte("not json\n")); err == nil {
		t.Error("Plot of garbage: want an error")
	}
}

func TestTickLabel(t *testing.T) {
	for _, tc := range []struct {
		v, step float64
		want    string
	}{{0, 2000, "0"}, {10000, 2000, "10K"}, {2500, 500, "2.5K"}, {1.5e6, 5e5, "1.5M"}, {0.5, 0.1, "0.5"}, {40, 10, "40"}} {
		if got := tickLabel(tc.v, tc.step); got != tc.want {
			t.Errorf("tickLabel(%g, %g) = %q, want %q", tc.v, tc.step, got, tc.want)
		}
	}
}

func TestCentrifugoToken(t *testing.T) {
	tok := centrifugoToken("u7")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	m := hmac.New(sha256.New, []byte(centrifugoTokenKey))
	m.Write([]byte(parts[0] + "." + parts[1]))
	if got := base64.RawURLEncoding.EncodeToString(m.Sum(nil)); got != parts[2] {
		t.Errorf("signature %s, want %s", parts[2], got)
	}
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || !strings.Contains(string(claims), `"sub":"u7"`) {
		t.Errorf("claims %s (%v)", claims, err)
	}
}

func TestFloorFrame(t *testing.T) {
	for _, n := range []int{10, 200, 70000} {
		p := bytes.Repeat([]byte("x"), n)
		f := floorFrame(nil, p)
		h, err := ws.ReadHeader(bytes.NewReader(f))
		if err != nil || h.OpCode != ws.OpText || !h.Fin || h.Masked {
			t.Fatalf("n=%d: header %+v, %v", n, h, err)
		}
		body := f[len(f)-int(h.Length):]
		if !bytes.HasPrefix(body, []byte(`[null,null,"floor","bench",`)) || !bytes.HasSuffix(body, append(p, ']')) {
			t.Errorf("n=%d: body %.60q…", n, body)
		}
	}
}

// TestCentrifugoConfigCompression checks the Centrifugo v6 keys that turn
// its WebSocket compression on for centrifugo-deflate (a misspelt key is
// ignored by Centrifugo, and the run would measure it uncompressed), and
// that plain centrifugo leaves them out.
func TestCentrifugoConfigCompression(t *testing.T) {
	var on, off struct {
		WebSocket *struct {
			Compression        bool `json:"compression"`
			CompressionMinSize int  `json:"compression_min_size"`
			CompressionLevel   int  `json:"compression_level"`
		} `json:"websocket"`
	}
	if err := json.Unmarshal(centrifugoConfig(8000, true), &on); err != nil {
		t.Fatal(err)
	}
	if w := on.WebSocket; w == nil || !w.Compression || w.CompressionMinSize != 256 || w.CompressionLevel != 1 {
		t.Errorf("deflate config websocket = %+v, want compression on, min size 256, level 1", w)
	}
	if err := json.Unmarshal(centrifugoConfig(8000, false), &off); err != nil {
		t.Fatal(err)
	}
	if off.WebSocket != nil {
		t.Errorf("plain config has websocket section %+v", off.WebSocket)
	}
}

// The resume workers check replay order by the offset in each broadcast's
// ref slot; anything else there is not an offset.
func TestRefOffset(t *testing.T) {
	for _, c := range []struct {
		frame string
		want  uint64
		ok    bool
	}{
		{`[null,"1234","room:a","msg",{"x":1}]`, 1234, true},
		{`[null,"18446744073709551615","room:a","msg",{}]`, 1<<64 - 1, true},
		{`[null,null,"bench:a","msg",{}]`, 0, false},
		{`["1","1","room:a","phx_reply",{}]`, 1, true},
		{`[null,"12x","room:a","msg",{}]`, 0, false},
		{`[null]`, 0, false},
	} {
		if got, ok := refOffset([]byte(c.frame)); got != c.want || ok != c.ok {
			t.Errorf("refOffset(%s) = %d, %v; want %d, %v", c.frame, got, ok, c.want, c.ok)
		}
	}
}
