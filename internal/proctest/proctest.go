// Package proctest helps tests that run fabric binaries as child processes.
package proctest

import (
	"net"
	"os"
	"strings"
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
