package serverapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/clients/go/phx"
)

// jsCall is one line of clients/js/test/serverapi.mjs.
type jsCall struct {
	Transport, RPC string
	Code           int
	Message        string
	Result         map[string]any
}

// Connect codes the script reports (connectrpc.com/connect's numbers).
const (
	codePermissionDenied = 7
	codeUnimplemented    = 12
	codeUnauthenticated  = 16
)

// @connectrpc/connect-node, with code protoc-gen-es generates here from
// the same .proto, calls every RPC over Connect (binary and JSON), gRPC
// (HTTP/2 without TLS) and gRPC-Web against a real gateway; a Phoenix
// client receives what it publishes.
func TestConnectNode(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	jsDir := filepath.Join(root, "clients", "js")
	plugin := filepath.Join(jsDir, "node_modules", ".bin", "protoc-gen-es")
	for _, need := range []string{plugin, filepath.Join(jsDir, "node_modules", "@connectrpc", "connect-node", "package.json")} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%s missing: run npm ci --prefix clients/js (%v)", need, err)
		}
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found: install Node 20")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Fatal("protoc not found: apt-get install -y protobuf-compiler")
	}
	gen := t.TempDir()
	cmd := exec.Command("protoc", "--plugin=protoc-gen-es="+plugin, "--es_out="+gen, "--es_opt=target=js,import_extension=js",
		"--proto_path="+filepath.Join(root, "schema", "proto"), "fabric/v1/publish.proto", "fabric/v1/api.proto")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc-gen-es: %v\n%s", err, out)
	}
	// The generated modules import @bufbuild/protobuf: resolve it from
	// clients/js like the script's own imports.
	if err := os.Symlink(filepath.Join(jsDir, "node_modules"), filepath.Join(gen, "node_modules")); err != nil {
		t.Fatal(err)
	}

	a := start(t, false)
	m := join(t, a, "room:a", "room:ax")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := exec.CommandContext(ctx, node, filepath.Join(jsDir, "test", "serverapi.mjs"))
	run.Env = append(os.Environ(), "FABRIC_GEN="+gen, "FABRIC_API_URL="+apiURL(a), "FABRIC_API_KEY="+keyAll, "FABRIC_TOPIC=room:a")
	var stderr bytes.Buffer
	run.Stderr = &stderr
	out, err := run.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	calls := map[string]jsCall{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var c jsCall
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%v: %s", err, sc.Bytes())
		}
		calls[c.Transport+" "+c.RPC] = c
	}
	transports := []string{"connect", "connect-json", "grpc", "grpc-web"}
	rpcs := []string{"publish", "publishBatch", "broadcast", "presence", "presenceStats", "history", "channels",
		"disconnect", "unsubscribe", "revoke", "clearChannel", "removeMessage", "info"}
	if len(calls) != len(transports)*(len(rpcs)+2) {
		t.Fatalf("%d calls reported, want %d:\n%s", len(calls), len(transports)*(len(rpcs)+2), out)
	}
	for _, tr := range transports {
		for _, rpc := range rpcs {
			c := calls[tr+" "+rpc]
			switch rpc {
			case "publish", "publishBatch", "broadcast", "history":
				if c.Code != 0 {
					t.Errorf("%s %s: code %d %s", tr, rpc, c.Code, c.Message)
				}
			default:
				// Served by the gateway's cluster control (nats/natsctl)
				// and its broker's moderation.
				if c.Code != 0 {
					t.Errorf("%s %s: code %d %s", tr, rpc, c.Code, c.Message)
				}
			}
		}
		if c := calls[tr+" publish/none"]; c.Code != codeUnauthenticated {
			t.Errorf("%s without a key: code %d", tr, c.Code)
		}
		if c := calls[tr+" publish/out-of-scope"]; c.Code != codePermissionDenied {
			t.Errorf("%s out of scope: code %d", tr, c.Code)
		}
		pub := calls[tr+" publish"].Result
		off, _ := pub["offset"].(string)
		got := m.waitFor(t, "js-"+tr, func(msg phx.Message) bool { return msg.Event == "js-"+tr })
		if off == "" || got.Offset == 0 || off != jsonOffset(got.Offset) || string(got.Payload) != `{"via":"`+tr+`"}` {
			t.Errorf("%s: API offset %q, client got %+v", tr, off, got)
		}
		hist, _ := calls[tr+" history"].Result["messages"].([]any)
		if len(hist) == 0 {
			t.Errorf("%s history: no messages: %v", tr, calls[tr+" history"].Result)
		}
	}
	m.waitFor(t, "the broadcast on room:ax", func(msg phx.Message) bool { return msg.Event == "js-bc" && msg.Topic == "room:ax" })
}

func jsonOffset(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
