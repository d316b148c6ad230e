package ws_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fabric-rt/fabric/gateway/transport"
	fws "github.com/fabric-rt/fabric/gateway/transport/ws"
)

// closer answers "keep" with three messages and CloseAfterQueued, and
// "drop" with three messages and Close. It runs on the loop goroutine, so
// nothing is flushed between the sends and the close.
type closer struct{ c transport.Conn }

func (s *closer) HandleMessage(_ bool, data []byte) {
	for _, m := range []string{"a", "b", "c"} {
		s.c.Send(transport.NewText([]byte(m)))
	}
	if string(data) == "keep" {
		s.c.(transport.QueuedCloser).CloseAfterQueued(transport.CloseRateLimited, "rate limited")
	} else {
		s.c.Close(transport.CloseRateLimited, "rate limited")
	}
}
func (s *closer) HandleClose(transport.CloseCode) {}

func TestCloseAfterQueuedSendsQueuedFirst(t *testing.T) {
	srv, err := fws.New(fws.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		srv.Upgrade(w, r, func(c transport.Conn) transport.Session { return &closer{c: c} })
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	})
	url := "ws" + strings.TrimPrefix(hs.URL, "http")
	for _, c := range []struct {
		msg  string
		want string // texts before the close frame
	}{{"keep", "abc"}, {"drop", ""}} {
		conn, _, _, err := ws.Dial(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		writeFrame(t, conn, true, 0, ws.OpText, true, []byte(c.msg))
		got := ""
		for {
			f, err := readFrame(t, conn)
			if err != nil {
				t.Fatalf("%s: %v after %q", c.msg, err, got)
			}
			if f.op == ws.OpClose {
				if code := int(f.payload[0])<<8 | int(f.payload[1]); code != 4029 {
					t.Fatalf("%s: close %d", c.msg, code)
				}
				break
			}
			got += string(f.payload)
		}
		if got != c.want {
			t.Fatalf("%s: got %q before the close, want %q", c.msg, got, c.want)
		}
	}
}
