package longpoll

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// gzipPoll gzips a poll answer whose body is at least min bytes when that
// makes it smaller. Unlike a WebSocket broadcast, a poll answer is one
// session's buffered frames: it is compressed per answer. The compressor is
// stateless (nothing pooled or kept per session); writePoll calls
// WriteHeader once and Write once, which is all this handles.
type gzipPoll struct {
	http.ResponseWriter
	min    int
	status int
}

func (g *gzipPoll) WriteHeader(status int) { g.status = status } // sent with the body

func (g *gzipPoll) Write(b []byte) (int, error) {
	h := g.ResponseWriter.Header()
	h.Add("Vary", "Accept-Encoding")
	if len(b) >= g.min {
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.StatelessCompression) // a valid level: no error
		_, _ = zw.Write(b)                                          // to memory
		_ = zw.Close()
		if z.Len() < len(b) {
			h.Set("Content-Encoding", "gzip")
			h.Set("Content-Length", strconv.Itoa(z.Len()))
			g.ResponseWriter.WriteHeader(g.status)
			_, err := g.ResponseWriter.Write(z.Bytes())
			return len(b), err
		}
	}
	g.ResponseWriter.WriteHeader(g.status)
	return g.ResponseWriter.Write(b)
}

// acceptsGzip reports whether the request's Accept-Encoding admits gzip
// (listed without q=0).
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := 1.0
			if k, val, ok := strings.Cut(strings.TrimSpace(params), "="); ok && strings.TrimSpace(k) == "q" {
				if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
					q = f
				}
			}
			return q > 0
		}
	}
	return false
}
