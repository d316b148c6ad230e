//go:build imagetest

package image

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestBuiltImage builds the real image twice from this commit (as
// `task image` does; the second build reuses Go's build cache but links
// and packs again) and checks the layout: same index digest both times,
// the amd64 binary answers `fabric version` on this machine, the arm64
// one is a static aarch64 ELF. Run by `task image-test` (tag imagetest):
// it cross-compiles ./cmd/fabric for two architectures, minutes on a
// cold cache, so it is not part of `go test ./...`.
func TestBuiltImage(t *testing.T) {
	if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err != nil {
		t.Fatalf("Debian's CA bundle (package ca-certificates) is needed: %v", err)
	}
	var digests []string
	var dirs []string
	for i := range 2 {
		work := t.TempDir()
		o, err := Prepare(BuildOptions{RepoRoot: "../..", Arches: []string{"amd64", "arm64"},
			CAFile: "/etc/ssl/certs/ca-certificates.crt", WorkDir: work})
		if err != nil {
			t.Fatal(err)
		}
		idx, err := Index(o)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "layout")
		d, err := WriteLayout(dir, idx, o.Version)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d: %s (version %s, time %s)", i+1, d, o.Version, o.Time)
		digests = append(digests, d.String())
		dirs = append(dirs, dir)
	}
	if digests[0] != digests[1] {
		t.Fatalf("two builds of one commit: %s != %s", digests[0], digests[1])
	}
	// The layouts are byte-identical too (blobs and index.json).
	for _, name := range []string{"index.json", "oci-layout"} {
		a, _ := os.ReadFile(filepath.Join(dirs[0], name))
		b, _ := os.ReadFile(filepath.Join(dirs[1], name))
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("%s differs between the builds", name)
		}
	}

	hash := mustHash(t, digests[0])
	imgs := Inspect(t, dirs[0], hash)
	for _, arch := range []string{"amd64", "arm64"} {
		img, ok := imgs[arch]
		if !ok {
			t.Fatalf("no %s image", arch)
		}
		bin := ReadFile(t, img, Binary)
		path := filepath.Join(t.TempDir(), "fabric-"+arch)
		if err := os.WriteFile(path, bin, 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
		if f.Machine != want || f.Class != elf.ELFCLASS64 || f.Type != elf.ET_EXEC {
			t.Errorf("%s: ELF machine %v class %v type %v, want %v 64-bit executable", arch, f.Machine, f.Class, f.Type, want)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: dynamically linked (%v): the image has no libc", arch, p.Type)
			}
		}
		f.Close()
		if arch != "amd64" {
			continue
		}
		out, err := exec.Command(path, "version").CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "fabric ") || !strings.Contains(string(out), "linux/amd64") {
			t.Errorf("extracted amd64 binary: fabric version: %v %q", err, out)
		}
		t.Logf("amd64: %s", strings.TrimSpace(string(out)))
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
