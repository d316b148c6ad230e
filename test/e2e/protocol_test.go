package e2e

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/phxnode"
)

// phoenix.js with a logger set reads payload.status of every message it
// receives; a null payload throws there (in Node with ws, the exception
// escapes the message handler and nothing after it is delivered). The
// fabric:offset frame after a binary broadcast is the one Fabric frame
// that could carry one.
func TestPhoenixJSWithLoggerTakesBinaryBroadcasts(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), map[string]any{}, map[string]any{"debug": true}); err != nil {
		t.Fatal(err)
	}
	if status, resp := p.Join("room:logged", nil); status != "ok" {
		t.Fatalf("join: %s %s", status, resp)
	}
	body := []byte{0, 1, 2, 0xff}
	f.publish("fabric.room.logged", "blob", body)
	f.publish("fabric.room.logged", "after", []byte(`{"n":1}`))

	e := p.MustNext(10*time.Second, "blob", phxnode.IsMsg("room:logged", "blob"))
	if !e.Binary || !bytes.Equal(e.Bytes(), body) {
		t.Fatalf("blob: binary=%v bytes=%v", e.Binary, e.Bytes())
	}
	off := p.MustNext(10*time.Second, "fabric:offset", phxnode.IsMsg("room:logged", "fabric:offset"))
	var payload struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(off.Payload, &payload); err != nil || payload.Offset == "" || payload.Offset != off.RefString() {
		t.Fatalf("fabric:offset payload %s ref %q: want {\"offset\": ref}", off.Payload, off.RefString())
	}
	p.MustNext(10*time.Second, "the message after the binary one", phxnode.IsMsg("room:logged", "after"))
	if fatal := p.Drain(phxnode.IsEv("fatal")); len(fatal) > 0 {
		t.Fatalf("phoenix.js threw: %v", fatal)
	}
	if strings.Contains(p.Stderr(), "TypeError") {
		t.Fatalf("phoenix.js threw:\n%s", p.Stderr())
	}
}
