package image

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Source is the repository the image's label points to.
const Source = "https://github.com/fabric-rt/fabric"

// BuildOptions says where the inputs come from.
type BuildOptions struct {
	RepoRoot string   // the main module's directory (holds ./cmd/fabric)
	Arches   []string // GOARCH values, e.g. amd64, arm64
	CAFile   string   // PEM bundle to copy, e.g. Debian's /etc/ssl/certs/ca-certificates.crt
	// Epoch: every timestamp in the image. Zero: $SOURCE_DATE_EPOCH, else
	// the commit time of HEAD, so one commit always gives one time.
	Epoch time.Time
	// Version for -X main.version and the tag; "": git describe --tags
	// --always --dirty (a dirty tree says so, and its digest differs).
	Version string
	WorkDir string // where the binaries are built (a temporary directory)
}

// Prepare builds the static binaries and gathers the other inputs.
func Prepare(b BuildOptions) (Options, error) {
	o := Options{Source: Source}
	var err error
	if o.CACerts, err = os.ReadFile(b.CAFile); err != nil {
		return o, fmt.Errorf("CA certificates: %w", err)
	}
	if o.Revision, err = git(b.RepoRoot, "rev-parse", "HEAD"); err != nil {
		return o, err
	}
	o.Version = b.Version
	if o.Version == "" {
		if o.Version, err = git(b.RepoRoot, "describe", "--tags", "--always", "--dirty"); err != nil {
			return o, err
		}
	}
	o.Time = b.Epoch
	if o.Time.IsZero() {
		if o.Time, err = epoch(b.RepoRoot); err != nil {
			return o, err
		}
	}
	for _, arch := range b.Arches {
		bin, err := GoBuild(b.RepoRoot, arch, o.Version, filepath.Join(b.WorkDir, "fabric-linux-"+arch))
		if err != nil {
			return o, err
		}
		o.Platforms = append(o.Platforms, Platform{Arch: arch, Binary: bin})
	}
	return o, nil
}

// GoBuild compiles ./cmd/fabric as a static linux/arch binary the same way
// on every machine: no cgo, -trimpath (no local paths), no VCS stamp and
// no build id (the version comes from -X), the baseline instruction set.
func GoBuild(repoRoot, arch, version, out string) ([]byte, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid= -X main.version="+version, "-o", out, "./cmd/fabric")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=", "GOEXPERIMENT=")
	if outb, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build (linux/%s): %v\n%s", arch, err, outb)
	}
	return os.ReadFile(out)
}

func epoch(repoRoot string) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		var err error
		if s, err = git(repoRoot, "log", "-1", "--format=%ct"); err != nil {
			return time.Time{}, err
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH / commit time %q: %v", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}
