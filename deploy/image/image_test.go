package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

var testTime = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func testOptions() Options {
	return Options{
		Platforms: []Platform{{Arch: "amd64", Binary: []byte("\x7fELF amd64 stand-in")}, {Arch: "arm64", Binary: []byte("\x7fELF arm64 stand-in")}},
		CACerts:   []byte("-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n"),
		Time:      testTime,
		Version:   "v0.0.0-test",
		Revision:  "0123456789abcdef0123456789abcdef01234567",
		Source:    Source,
	}
}

func digestOf(t *testing.T, o Options) v1.Hash {
	t.Helper()
	idx, err := Index(o)
	if err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestIndexReproducible: the same inputs give the same digest, and each
// input (time, binary, CA bundle) changes it, so the digest is a
// function of exactly these inputs.
func TestIndexReproducible(t *testing.T) {
	a, b := digestOf(t, testOptions()), digestOf(t, testOptions())
	if a != b {
		t.Fatalf("two builds of the same inputs: %s != %s", a, b)
	}
	for name, mod := range map[string]func(*Options){
		"time":   func(o *Options) { o.Time = o.Time.Add(time.Second) },
		"binary": func(o *Options) { o.Platforms[1].Binary = []byte("\x7fELF other") },
		"certs":  func(o *Options) { o.CACerts = append(o.CACerts, '\n') },
	} {
		o := testOptions()
		mod(&o)
		if digestOf(t, o) == a {
			t.Errorf("changing the %s left the digest unchanged", name)
		}
	}
}

// TestLayout writes the layout and reads it back as a runtime would: one
// index with an image per platform, run as the non-root user, entrypoint
// the binary, files at fixed times in sorted order.
func TestLayout(t *testing.T) {
	dir := t.TempDir() + "/layout"
	idx, err := Index(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	want, err := WriteLayout(dir, idx, "v0.0.0-test")
	if err != nil {
		t.Fatal(err)
	}
	imgs := Inspect(t, dir, want)
	if got := slices.Sorted(func(yield func(string) bool) {
		for a := range imgs {
			if !yield(a) {
				return
			}
		}
	}); !slices.Equal(got, []string{"amd64", "arm64"}) {
		t.Fatalf("platforms %v", got)
	}
	for arch, img := range imgs {
		bin := ReadFile(t, img, Binary)
		if !bytes.Contains(bin, []byte(arch)) {
			t.Errorf("%s: %s holds %q", arch, Binary, bin)
		}
	}
}

// Inspect opens an OCI layout written by WriteLayout and checks what every
// image must be, returning the images by architecture. The build tests
// (imagetest tag) run it on the real image.
func Inspect(t *testing.T, dir string, want v1.Hash) map[string]v1.Image {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Manifests) != 1 || rm.Manifests[0].Digest != want || rm.Manifests[0].Annotations[RefName] == "" {
		t.Fatalf("index.json: %+v, want one tagged index %s", rm.Manifests, want)
	}
	idx, err := root.ImageIndex(want)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" {
			t.Errorf("manifest %s: platform %+v", d.Digest, d.Platform)
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		where := d.Platform.Architecture
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.Architecture != d.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("%s: config says %s/%s", where, cf.OS, cf.Architecture)
		}
		uid, _, _ := strings.Cut(cf.Config.User, ":")
		if uid == "" || uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
			t.Errorf("%s: user %q: want a numeric non-root uid", where, cf.Config.User)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{Binary}) || len(cf.Config.Cmd) == 0 || cf.Config.Cmd[0] != "serve" {
			t.Errorf("%s: entrypoint %q cmd %q: want %s serve ...", where, cf.Config.Entrypoint, cf.Config.Cmd, Binary)
		}
		if slices.Contains(cf.Config.Cmd, "--allow-anonymous") {
			t.Errorf("%s: the default command opens anonymous joins", where)
		}
		if !cf.Created.Time.Equal(cf.Created.Time.Truncate(time.Second)) || cf.Created.IsZero() {
			t.Errorf("%s: created %v", where, cf.Created)
		}
		checkFiles(t, where, img, cf.Created.Time)
		passwd := string(ReadFile(t, img, "/etc/passwd"))
		if !strings.Contains(passwd, ":"+uid+":") {
			t.Errorf("%s: /etc/passwd has no entry for uid %s:\n%s", where, uid, passwd)
		}
		if len(ReadFile(t, img, CAFile)) == 0 {
			t.Errorf("%s: no CA certificates", where)
		}
		out[where] = img
	}
	return out
}

// checkFiles: in every layer the entries are sorted, stamped with the
// image time, owned by root except /data (the user's volume), and no
// binary is writable by its user.
func checkFiles(t *testing.T, where string, img v1.Image, ts time.Time) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		var names []string
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s layer %d: %v", where, i, err)
			}
			names = append(names, h.Name)
			if !h.ModTime.Equal(ts) {
				t.Errorf("%s layer %d: %s time %v, want %v", where, i, h.Name, h.ModTime, ts)
			}
			owner := h.Uid == 0 && h.Gid == 0
			if h.Name == "data/" {
				owner = h.Uid == UID && h.Gid == GID
			}
			if !owner {
				t.Errorf("%s layer %d: %s owned by %d:%d", where, i, h.Name, h.Uid, h.Gid)
			}
		}
		rc.Close()
		if !slices.IsSorted(names) {
			t.Errorf("%s layer %d: entries not sorted: %v", where, i, names)
		}
	}
}

// ReadFile returns a file of the image's flattened file system.
func ReadFile(t *testing.T, img v1.Image, name string) []byte {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("no %s in the image", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if "/"+strings.TrimPrefix(h.Name, "./") == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
