package fault

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// TestMain fails the package's run if a test leaves a goroutine behind, and
// removes the binaries proctest built, so a run leaves nothing in the temp
// directory (t.TempDir cleans up the rest).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { proctest.RemoveBinaries() }))
}
