// Command fabric-image builds Fabric's multi-arch OCI image with no
// container engine and no base image (package image) and writes it as an
// OCI layout directory. Run from deploy/: go run ./cmd/fabric-image
// (task image). Same commit, Go toolchain and CA bundle: same digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/fabric-rt/fabric/deploy/image"
)

func main() {
	out := flag.String("o", "../dist/fabric-image", "OCI layout directory to write (replaced)")
	arches := flag.String("arch", "amd64,arm64", "comma-separated GOARCH values")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "PEM CA bundle to copy (Debian's ca-certificates)")
	version := flag.String("version", "", "version (default: git describe --tags --always --dirty)")
	flag.Parse()
	if err := run(*out, strings.Split(*arches, ","), *ca, *version); err != nil {
		fmt.Fprintln(os.Stderr, "fabric-image:", err)
		os.Exit(1)
	}
}

func run(out string, arches []string, ca, version string) error {
	work, err := os.MkdirTemp("", "fabric-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o, err := image.Prepare(image.BuildOptions{RepoRoot: "..", Arches: arches, CAFile: ca, Version: version, WorkDir: work})
	if err != nil {
		return err
	}
	idx, err := image.Index(o)
	if err != nil {
		return err
	}
	d, err := image.WriteLayout(out, idx, o.Version)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s (fabric %s, %s, time %s)\n", out, d, o.Version, strings.Join(arches, ","), o.Time.Format("2006-01-02T15:04:05Z"))
	return nil
}
