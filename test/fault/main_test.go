package fault

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the directory fabricBin built the binary into, so a run
// leaves nothing in the temp directory (t.TempDir cleans up the rest).
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
