// Package image assembles Fabric's OCI image without a container engine
// and without any base image: a layer of system files (CA certificates,
// passwd/group with the non-root user, /data and /tmp) and a layer with the
// static `fabric` binary, one image per platform, in one OCI image index
// written as an OCI layout directory. Every input is explicit and every
// timestamp is Options.Time, so the same binaries and files give the same
// digest (go-containerregistry does the OCI encoding).
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's user: uid/gid 65532 "nonroot", as distroless images use, so
// the Kubernetes manifests' runAsUser and fsGroup stay the same.
const (
	UID      = 65532
	GID      = 65532
	User     = "65532:65532"
	Binary   = "/usr/local/bin/fabric"
	CAFile   = "/etc/ssl/certs/ca-certificates.crt"
	DataDir  = "/data"
	RefName  = "org.opencontainers.image.ref.name"
	Revision = "org.opencontainers.image.revision"
)

// DefaultCmd is the image's default command: a single-node gateway with
// its embedded NATS/JetStream store in /data. Only the client port leaves
// the container's loopback, and serve still refuses to run without
// authentication there: give it FABRIC_JWT_SECRET (or another key), or
// --allow-anonymous for a local demo. Kubernetes and compose always give
// their own command.
var DefaultCmd = []string{"serve", "--listen", "0.0.0.0:4000", "--data-dir", DataDir}

// Platform is one architecture's binary.
type Platform struct {
	Arch   string // GOARCH: amd64, arm64
	Binary []byte // static linux/<Arch> fabric binary
}

// Options is everything the image is made of.
type Options struct {
	Platforms []Platform
	CACerts   []byte    // PEM bundle for CAFile
	Time      time.Time // every timestamp: files, config, history
	Version   string    // org.opencontainers.image.version and the tag (ref name)
	Revision  string    // VCS commit
	Source    string    // org.opencontainers.image.source
}

// Index builds the multi-platform image index.
func Index(o Options) (v1.ImageIndex, error) {
	if len(o.Platforms) == 0 {
		return nil, fmt.Errorf("image: no platforms")
	}
	if len(o.CACerts) == 0 {
		return nil, fmt.Errorf("image: no CA certificates")
	}
	base, err := layerOf(systemFiles(o), o.Time)
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.Platforms {
		img, err := platformImage(o, p, base)
		if err != nil {
			return nil, fmt.Errorf("image: %s: %w", p.Arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: p.Arch}},
		})
	}
	return idx, nil
}

func platformImage(o Options, p Platform, base v1.Layer) (v1.Image, error) {
	bin, err := layerOf([]file{
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: "usr/local/bin/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(Binary, "/"), mode: 0o755, body: p.Binary},
	}, o.Time)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: o.Time}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "fabric-image: CA certificates, passwd/group (uid 65532), /data, /tmp", Comment: "no base image"}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{Created: created, CreatedBy: "fabric-image: CGO_ENABLED=0 go build -trimpath ./cmd/fabric (" + p.Arch + ")"}},
	)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = "linux"
	cf.Architecture = p.Arch
	if p.Arch == "arm64" {
		cf.Variant = "v8"
	}
	cf.Config = v1.Config{
		User:       User,
		Entrypoint: []string{Binary},
		Cmd:        DefaultCmd,
		WorkingDir: DataDir,
		Env:        []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + CAFile},
		ExposedPorts: map[string]struct{}{
			"4000/tcp": {}, // client HTTP/WebSocket/LongPoll
			"4001/tcp": {}, // ops: /healthz /readyz /metrics (loopback unless --ops-listen)
			"4222/tcp": {}, // NATS clients
			"6222/tcp": {}, // NATS routes
		},
		Volumes: map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			"org.opencontainers.image.title":    "fabric",
			"org.opencontainers.image.version":  o.Version,
			"org.opencontainers.image.revision": o.Revision,
			"org.opencontainers.image.source":   o.Source,
			"org.opencontainers.image.created":  o.Time.UTC().Format(time.RFC3339),
		},
	}
	return mutate.ConfigFile(img, cf)
}

// systemFiles: what a static Go binary needs from an OS image. passwd and
// group are generated (two lines each) rather than copied, so the host's
// accounts never leak into the image.
func systemFiles(o Options) []file {
	return []file{
		{name: "data/", mode: 0o755, dir: true, uid: UID, gid: GID}, // the volume: writable by the user
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID))},
		{name: "etc/passwd", mode: 0o644, body: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/data:/sbin/nologin\n", UID, GID))},
		{name: "etc/ssl/", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(CAFile, "/"), mode: 0o644, body: o.CACerts},
		{name: "tmp/", mode: 0o1777, dir: true},
	}
}

type file struct {
	name     string
	mode     int64
	dir      bool
	uid, gid int
	body     []byte
}

// layerOf writes files as a tar (sorted by name, one fixed time, numeric
// owners without names, plain USTAR headers) and returns it as a gzip layer.
// gzip output is deterministic for a given Go version and level.
func layerOf(files []file, t time.Time) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:    f.name,
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: t.UTC().Truncate(time.Second),
			Format:  tar.FormatUSTAR,
		}
		if f.dir {
			h.Typeflag = tar.TypeDir
			if !strings.HasSuffix(h.Name, "/") {
				return nil, fmt.Errorf("image: directory %q must end in /", f.name)
			}
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		}
		if path.Clean("/"+h.Name) == "/" {
			return nil, fmt.Errorf("image: bad name %q", f.name)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !f.dir {
			if _, err := tw.Write(f.body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// WriteLayout writes idx as a fresh OCI layout directory dir (removed
// first), the index tagged with ref (org.opencontainers.image.ref.name).
func WriteLayout(dir string, idx v1.ImageIndex, ref string) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{RefName: ref})); err != nil {
		return v1.Hash{}, err
	}
	return idx.Digest()
}
