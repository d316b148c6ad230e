package presence

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// TestMain fails the package's run if a test leaves a goroutine behind, and
// removes the fabric binary proctest built for the tests that run it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { proctest.RemoveBinaries() }))
}
