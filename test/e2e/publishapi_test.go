package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

func postPublish(t *testing.T, f *fabric, bearer string, body map[string]any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+f.HTTPAddr()+"/api/v1/publish", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// The HTTP publish API on the gateway's own listener: credentials, and the
// message reaching a client with the acknowledged offset.
func TestPublishAPIOnGateway(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) { c.PublishAPIKeys = []string{"k-123"} })
	conn := mint(t, auth.MintClaims{Subject: "dave", Channels: []string{"room:*"}})
	pubTok := mint(t, auth.MintClaims{Subject: "svc", Type: auth.TypePublisher})
	ctxC, err := phxclient.Dial(t.Context(), f.wsURL("2.0.0")+"&token="+conn, phoenix.V2, phxclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctxC.Close()
	joinPos(t, ctxC, "room:api", nil)

	msg := map[string]any{"topic": "room:api", "event": "news", "payload": base64.StdEncoding.EncodeToString([]byte(`{"n":1}`)), "content_type": "application/json"}
	if code, _ := postPublish(t, f, "", msg); code != 401 {
		t.Fatalf("no credential: %d", code)
	}
	if code, _ := postPublish(t, f, "wrong", msg); code != 401 {
		t.Fatalf("wrong key: %d", code)
	}
	if code, _ := postPublish(t, f, conn, msg); code != 403 {
		t.Fatalf("a client's connection token: %d, want 403", code)
	}
	for _, cred := range []string{"k-123", pubTok} {
		code, out := postPublish(t, f, cred, msg)
		if code != 200 {
			t.Fatalf("publish: %d %v", code, out)
		}
		m, err := ctxC.NextMatch(wait, func(m phxclient.Msg) bool { return m.Event == "news" })
		if err != nil || string(m.Payload) != `{"n":1}` {
			t.Fatalf("delivery: %+v %v", m, err)
		}
		if off, _ := strconv.ParseUint(m.Ref.S, 10, 64); strconv.FormatUint(off, 10) != out["offset"] {
			t.Fatalf("delivered offset %s, acked %v", m.Ref.S, out["offset"])
		}
	}
}
