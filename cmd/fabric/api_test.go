package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/publisher/serverapi"
)

// The server API commands against a real gateway: history reads what
// was published; kick reaches the cluster (this gateway); bad credentials
// and usage are explained.
func TestAPICommands(t *testing.T) {
	const key = "cli-test-key-0123456789"
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	doc := "keys:\n  - name: cli\n    sha256: " + serverapi.HashKey(key) + "\n    publish: [\"room:*\"]\n    history: [\"room:*\"]\n    admin: true\n"
	if err := os.WriteFile(keys, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a := testkit.StartApp(t, app.Config{Listen: "127.0.0.1:0", OpsListen: "off", NATSListen: "off", DataDir: t.TempDir(),
		JWTSecret: "an-hs256-test-secret-of-32-bytes!", APIKeysFile: keys})
	url := "http://" + a.HTTPAddr()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		var out, errOut bytes.Buffer
		if err := publish(ctx, []string{"--api-url", url, "--api-key", key, "--event", "e", "room:cli", `{"i":` + string(rune('0'+i)) + `}`}, nil, nil, &out, &errOut); err != nil {
			t.Fatalf("publish: %v %s", err, errOut.String())
		}
	}
	run := func(cmd string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := apiCmd(ctx, cmd, args, []string{"FABRIC_API_KEY=" + key, "FABRIC_API_URL=" + url}, &out, &errOut)
		return out.String(), err
	}
	out, err := run("history", "--last", "2", "room:cli")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "2  e  {\"i\":1}") || !strings.Contains(out, "3  e  {\"i\":2}") || strings.Contains(out, `{"i":0}`) || !strings.Contains(out, "done true") {
		t.Fatalf("history --last 2:\n%s", out)
	}
	out, err = run("history", "--since", "0", "--limit", "1", "--json", "room:cli")
	// protojson varies its whitespace on purpose: read the JSON.
	var page struct {
		Messages []struct{ Offset string }
		Done     bool
	}
	if err != nil || json.Unmarshal([]byte(out), &page) != nil || len(page.Messages) != 1 || page.Messages[0].Offset != "1" || page.Done {
		t.Fatalf("history --since 0 --limit 1: %v\n%s", err, out)
	}
	// The gateway serves the cluster RPCs itself (nats/natsctl): a kick
	// of a user with no connection answers, from this one gateway.
	if out, err := run("kick", "--ban", "10m", "u1"); err != nil || !strings.Contains(out, "1 answered") {
		t.Fatalf("kick: %v\n%s", err, out)
	}
	var o, e bytes.Buffer
	err = apiCmd(ctx, "info", []string{"--api-url", url}, nil, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "unauthenticated") || !strings.Contains(err.Error(), "--api-key") {
		t.Fatalf("no key: %v", err)
	}
	if _, err := run("revoke", "--user", "u1"); err == nil || !strings.Contains(err.Error(), "--before") {
		t.Fatalf("revoke --user without --before: %v", err)
	}
}
