package layers

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryPackageChecksLeaks: every package with tests, in the three
// modules (the main one, deploy/ and clients/go), has a TestMain that runs
// goleak (goleak.VerifyTestMain, or goleak.Find after m.Run), so a test that
// leaves a goroutine behind fails its package. A new package copies any
// leak_test.go.
func TestEveryPackageChecksLeaks(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]int{}
	for _, mod := range []string{".", "deploy", "clients/go"} {
		cmd := exec.Command("go", "list", "-f", "{{.Dir}}\t{{join .TestGoFiles \" \"}} {{join .XTestGoFiles \" \"}}", "./...")
		cmd.Dir = filepath.Join(root, mod)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list in %s: %v\n%s", mod, err, stderrOf(err))
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			dir, files, _ := strings.Cut(line, "\t")
			names := strings.Fields(files)
			if len(names) == 0 {
				continue // no tests
			}
			checked[mod]++
			ok, err := leakCheckedMain(dir, names)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				rel, _ := filepath.Rel(root, dir)
				t.Errorf("%s has tests but no TestMain running goleak: add a leak_test.go (copy test/layers/leak_test.go)", filepath.ToSlash(rel))
			}
		}
	}
	// Guard the listing itself: each module has packages with tests.
	for _, mod := range []string{".", "deploy", "clients/go"} {
		if checked[mod] == 0 {
			t.Errorf("no package with tests found in module %s: is the listing broken?", mod)
		}
	}
}

// leakCheckedMain reports whether one of a package's test files declares
// TestMain calling goleak.VerifyTestMain or goleak.Find.
func leakCheckedMain(dir string, files []string) (bool, error) {
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return false, err
		}
		for _, d := range f.Decls {
			fn, isFunc := d.(*ast.FuncDecl)
			if !isFunc || fn.Name.Name != "TestMain" || fn.Recv != nil || fn.Body == nil {
				continue
			}
			found := false
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if sel, isSel := n.(*ast.SelectorExpr); isSel {
					if id, isID := sel.X.(*ast.Ident); isID && id.Name == "goleak" &&
						(sel.Sel.Name == "VerifyTestMain" || sel.Sel.Name == "Find") {
						found = true
					}
				}
				return !found
			})
			return found, nil
		}
	}
	return false, nil
}

// stderrOf is what a failed command wrote to stderr.
func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// The check itself: a TestMain without goleak, or none at all, is found.
func TestLeakCheckedMainFindsMissingCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("plain_test.go", "package p\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) {}\n")
	write("main_test.go", "package p\n\nimport (\n\t\"os\"\n\t\"testing\"\n)\n\nfunc TestMain(m *testing.M) { os.Exit(m.Run()) }\n")
	write("leak_test.go", "package p\n\nimport (\n\t\"testing\"\n\n\t\"go.uber.org/goleak\"\n)\n\nfunc TestMain(m *testing.M) { goleak.VerifyTestMain(m) }\n")
	for _, tc := range []struct {
		files []string
		want  bool
	}{
		{[]string{"plain_test.go"}, false},
		{[]string{"plain_test.go", "main_test.go"}, false},
		{[]string{"plain_test.go", "leak_test.go"}, true},
	} {
		got, err := leakCheckedMain(dir, tc.files)
		if err != nil || got != tc.want {
			t.Errorf("%v: %v %v, want %v", tc.files, got, err, tc.want)
		}
	}
}
