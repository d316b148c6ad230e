// Package proctest helps tests that run fabric binaries as child processes.
package proctest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
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

// built is the fabric binary FabricBinary built for this test process.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// FabricBinary builds cmd/fabric once per test process and returns its
// path. Call RemoveBinaries from TestMain after m.Run.
func FabricBinary(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "fabric-bin-"); built.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(built.dir, "fabric"), "github.com/fabric-rt/fabric/cmd/fabric").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "fabric")
}

// RemoveBinaries removes what FabricBinary built.
func RemoveBinaries() {
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
}
