package control

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// A gateway that stops answering (its process SIGSTOP'd: alive a moment
// ago, silent now) is reported Missing — never silently left out — and
// the operation still returns, at its deadline, with the others' answers.
func TestStoppedGatewayIsReportedMissing(t *testing.T) {
	g1 := start(t, "")
	dir := t.TempDir()
	bin := proctest.FabricBinary(t)
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--ops-listen", "off",
		"--nats-url", g1.NATSURL(), "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	// Wait (bounded) for the process to answer like any gateway.
	var other string
	for deadline := time.Now().Add(30 * time.Second); other == "" && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := g1.Cluster().Info(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range info.Answered {
			if id != g1.Gateway().ID() {
				other = id
			}
		}
		if other == "" {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if other == "" {
		t.Fatalf("fabric serve never answered; stderr:\n%s", stderr.String())
	}

	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	began := time.Now()
	info, err := g1.Cluster().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Missing, []string{other}) || !slices.Equal(info.Answered, []string{g1.Gateway().ID()}) {
		t.Fatalf("with %s stopped: answered %v, missing %v", other, info.Answered, info.Missing)
	}
	if len(info.Gateways) != 1 {
		t.Fatalf("gateways: %+v", info.Gateways)
	}
	t.Logf("stopped gateway reported missing after %v (the deadline)", time.Since(began).Round(time.Millisecond))
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(bin)
}
