// Package proctest helps tests that run fabric binaries as child processes.
package proctest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Env is this process's environment without FABRIC_* variables: fabric
// refuses unknown ones, and settings of the shell running the tests
// (FABRIC_NATS_URL, FABRIC_ARTIFACTS, …) would change what a test runs.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FABRIC_") {
			env = append(env, kv)
		}
	}
	return env
}

// FreeAddrOn reserves a port on host (a loopback alias such as 127.0.0.2)
// and returns host:port, free again for the child to take.
func FreeAddrOn(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// built holds the binaries Binary built for this test process, all in one
// temporary directory that RemoveBinaries removes.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*binary // by package path
}

// binary is one package's build, done once.
type binary struct {
	once sync.Once
	path string
	err  error
}

// FabricBinary builds cmd/fabric once per test process and returns its
// path. Call RemoveBinaries from TestMain after m.Run.
func FabricBinary(t testing.TB) string {
	t.Helper()
	return Binary(t, "github.com/fabric-rt/fabric/cmd/fabric")
}

// Binary builds the main package pkg (at the version this module's go.mod
// selects, e.g. github.com/nats-io/nats-server/v2) once per test process
// and returns its path; tests running at the same time wait for the one
// build. Call RemoveBinaries from TestMain after m.Run.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	built.mu.Lock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "fabric-bin-")
		if err != nil {
			built.mu.Unlock()
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]*binary{}
	}
	b := built.bins[pkg]
	if b == nil {
		b = &binary{path: filepath.Join(built.dir, binName(pkg))}
		built.bins[pkg] = b
	}
	built.mu.Unlock()
	b.once.Do(func() {
		// go test puts its own toolchain's bin first on PATH.
		out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// binName is the name go install gives pkg's binary: its last element,
// or the one before a major-version suffix (nats-server for .../nats-server/v2).
func binName(pkg string) string {
	name := path.Base(pkg)
	if len(name) > 1 && name[0] == 'v' && strings.Trim(name[1:], "0123456789") == "" {
		return path.Base(path.Dir(pkg))
	}
	return name
}

// RemoveBinaries removes what Binary and FabricBinary built.
func RemoveBinaries() {
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
		built.dir, built.bins = "", nil
	}
}
