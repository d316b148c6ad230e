package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestMain removes the directory fabricBin built the binary into, so a run
// leaves nothing in the temp directory (t.TempDir cleans up the rest).
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// Fail the run if a test left a goroutine behind (as goleak.VerifyTestMain).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
