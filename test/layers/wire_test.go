package layers

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// wireName matches a string literal that spells a name of the Fabric↔NATS
// contract: a Fabric header, the JetStream stored-time header, a stream
// metadata key Fabric owns.
var wireName = regexp.MustCompile(`"(Fabric-[A-Za-z-]+|Nats-Time-Stamp|fabric_(epoch|created|limits|min_per_channel))"`)

// TestOnlyWireNamesTheContract: the gateways and the publisher library
// must agree on every name of the NATS contract, so exactly one package
// (nats/wire) spells them; everyone else uses its constants. Tests may
// spell them (they check the contract from outside), and so may examples/,
// which show what a plain NATS client in any language sends.
func TestOnlyWireNamesTheContract(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	scanned := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch {
			case rel == ".":
				return nil
			case strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata" ||
				rel == "examples" || rel == "nats/wire":
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		for _, m := range wireName.FindAll(src, -1) {
			t.Errorf("%s spells %s: use the nats/wire constant", rel, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if scanned < 50 {
		t.Fatalf("only %d Go files scanned under %s: the walk is wrong", scanned, root)
	}
}
