package schema

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const installHint = "protoc not found: install it with `apt-get install -y protobuf-compiler` (Debian)"

// protocVersion is the line protoc-gen-go writes with the protoc version.
// It is the only part of the output that depends on which protoc ran, so a
// developer with another protoc release does not get a false "stale".
var protocVersion = regexp.MustCompile(`(?m)^// \tprotoc +v?\S+\n`)

// TestGenerated regenerates the Go code into a temporary directory and
// compares it with the committed schema/gen.
func TestGenerated(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(installHint + " (CI is set, so this check may not be skipped)")
		}
		t.Skip(installHint)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("bash not found: %v", err)
	}
	out := t.TempDir()
	cmd := exec.Command("bash", "generate.sh", out)
	cmd.Env = os.Environ()
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, output)
	}
	fresh := generated(t, filepath.Join(out, "schema", "gen"))
	committed := generated(t, "gen")
	if len(fresh) == 0 {
		t.Fatal("generate.sh produced no .pb.go files")
	}
	var stale []string
	for name, want := range fresh {
		got, ok := committed[name]
		if !ok {
			stale = append(stale, name+" is missing")
			continue
		}
		if !bytes.Equal(normalize(got), normalize(want)) {
			stale = append(stale, name+" differs")
		}
	}
	for name := range committed {
		if _, ok := fresh[name]; !ok {
			stale = append(stale, name+" is no longer generated")
		}
	}
	if len(stale) > 0 {
		sort.Strings(stale)
		t.Fatalf("stale: run schema/generate.sh (%s)", strings.Join(stale, "; "))
	}
}

// generated reads every .pb.go and .connect.go file under dir, keyed by its path relative
// to dir (hand-written files such as doc.go are not compared).
func generated(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".pb.go") || strings.HasSuffix(path, ".connect.go")) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func normalize(b []byte) []byte { return protocVersion.ReplaceAll(b, nil) }
