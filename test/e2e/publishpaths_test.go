package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/publisher"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// Every publishing path — Go library, HTTP JSON, HTTP protobuf, the CLI,
// and nats.go with a header — reaches the real phoenix client with the
// same event, the same payload and a valid offset.
func TestEveryPublishPathReachesPhoenixJS(t *testing.T) {
	f := startFabric(t, nil)
	p := phxnode.Start(t)
	if err := p.Connect(f.socketURL(), nil, nil); err != nil {
		t.Fatal(err)
	}
	if s, _ := p.Join("room:paths", nil); s != "ok" {
		t.Fatal(s)
	}
	expect := func(path, event string, want uint64) {
		t.Helper()
		e := p.MustNext(wait, path, phxnode.IsMsg("room:paths", event))
		if string(e.Payload) != fmt.Sprintf(`{"via":%q}`, path) {
			t.Fatalf("%s: payload %s", path, e.Payload)
		}
		if e.RefString() == "" || (want != 0 && e.RefString() != fmt.Sprint(want)) {
			t.Fatalf("%s: offset %q, acknowledged %d", path, e.RefString(), want)
		}
	}
	body := func(path string) []byte { return []byte(fmt.Sprintf(`{"via":%q}`, path)) }

	// Go library.
	pub, err := publisher.New(f.nc, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close) // ends its connection-status watcher
	res, err := pub.Publish(context.Background(), "room:paths", "lib", body("lib"))
	if err != nil {
		t.Fatal(err)
	}
	expect("lib", "lib", res.Offset)

	// HTTP, JSON and protobuf.
	post := func(ct string, b []byte) uint64 {
		t.Helper()
		resp, err := http.Post("http://"+f.HTTPAddr()+publisher.PathPublish, ct, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", ct, resp.StatusCode)
		}
		var out fabricv1.PublishResponse
		buf := new(bytes.Buffer)
		buf.ReadFrom(resp.Body)
		if ct == publisher.ContentTypeProtobuf {
			if err := proto.Unmarshal(buf.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
		} else {
			var j struct{ Offset string }
			json.Unmarshal(buf.Bytes(), &j)
			fmt.Sscan(j.Offset, &out.Offset)
		}
		return out.Offset
	}
	jb, _ := json.Marshal(map[string]string{"topic": "room:paths", "event": "http_json", "payload": base64.StdEncoding.EncodeToString(body("http_json"))})
	expect("http_json", "http_json", post("application/json", jb))
	pb, _ := proto.Marshal(&fabricv1.PublishRequest{Topic: "room:paths", Event: "http_pb", Payload: body("http_pb")})
	expect("http_pb", "http_pb", post(publisher.ContentTypeProtobuf, pb))

	// The CLI, as a user runs it.
	cmd := exec.Command(proctest.FabricBinary(t), "publish", "--nats-url", f.NATSURL(), "--event", "cli", "room:paths", string(body("cli")))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "offset=") {
		t.Fatalf("cli: %v %s", err, out)
	}
	var off uint64
	fmt.Sscanf(string(out), "offset=%d", &off)
	expect("cli", "cli", off)

	// Any NATS client with the header.
	f.publish("fabric.room.paths", "nats", body("nats"))
	expect("nats", "nats", 0)
}
