package proctest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

const hello = "github.com/fabric-rt/fabric/internal/testkit/proctest/testdata/hello"

// Tests asking at the same time get one build, in one directory that
// RemoveBinaries removes; a later ask builds again.
func TestBinaryBuildsOnceAndIsRemoved(t *testing.T) {
	paths := make([]string, 4)
	var wg sync.WaitGroup
	for i := range paths {
		wg.Go(func() { paths[i] = Binary(t, hello) })
	}
	wg.Wait()
	for _, p := range paths[1:] {
		if p != paths[0] {
			t.Fatalf("one package built to two paths: %q", paths)
		}
	}
	if filepath.Base(paths[0]) != "hello" {
		t.Errorf("binary named %q, want hello", filepath.Base(paths[0]))
	}
	out, err := exec.Command(paths[0]).Output()
	if err != nil || !strings.Contains(string(out), "hello from a built binary") {
		t.Fatalf("running the built binary: %v %q", err, out)
	}

	RemoveBinaries()
	if _, err := os.Stat(filepath.Dir(paths[0])); !os.IsNotExist(err) {
		t.Fatalf("RemoveBinaries left %s: %v", filepath.Dir(paths[0]), err)
	}
	again := Binary(t, hello)
	if _, err := os.Stat(again); err != nil {
		t.Fatalf("built again after RemoveBinaries: %v", err)
	}
}

func TestBinName(t *testing.T) {
	for pkg, want := range map[string]string{
		"github.com/fabric-rt/fabric/cmd/fabric": "fabric",
		"github.com/nats-io/nats-server/v2":      "nats-server",
		"example.com/tool/v10":                   "tool",
		"example.com/v":                          "v",
		"example.com/vendor":                     "vendor",
	} {
		if got := binName(pkg); got != want {
			t.Errorf("binName(%q) = %q, want %q", pkg, got, want)
		}
	}
}
