// Package chart renders and lints the Fabric Helm chart with Helm's own
// packages (helm.sh/helm/v3: the loader, schema validation, template engine
// and linter that `helm template` and `helm lint` run), offline: no
// cluster, no repository, no helm binary.
package chart

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
)

// Release is the release name the plain manifests and the tests use: with
// it the chart's objects are named fabric-gateway, fabric-nats, ...
const Release = "fabric"

// Values reads a values file ("" for none: the chart's defaults alone).
func Values(file string) (map[string]any, error) {
	if file == "" {
		return map[string]any{}, nil
	}
	v, err := chartutil.ReadValuesFile(file)
	if err != nil {
		return nil, err
	}
	return v.AsMap(), nil
}

// Template is `helm template <Release> dir -f valuesFile`: values merged
// over the chart's defaults, checked against values.schema.json, templates
// rendered. It returns the rendered manifest files (NOTES and helpers
// excluded) by template path, sorted.
func Template(dir, valuesFile string) ([]File, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	vals, err := Values(valuesFile)
	if err != nil {
		return nil, err
	}
	opts := chartutil.ReleaseOptions{Name: Release, Namespace: "default", Revision: 1, IsInstall: true}
	// ToRenderValues validates against values.schema.json, as install does.
	top, err := chartutil.ToRenderValues(ch, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Render(ch, top)
	if err != nil {
		return nil, err
	}
	var files []File
	for name, body := range out {
		base := filepath.Base(name)
		if strings.HasPrefix(base, "_") || strings.HasSuffix(base, "NOTES.txt") || strings.TrimSpace(body) == "" {
			continue
		}
		files = append(files, File{Name: name, Body: body})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	return files, nil
}

// File is one rendered template.
type File struct {
	Name string // fabric/templates/gateway.yaml
	Body string
}

// Join writes files as `helm template` prints them: each after a ---
// separator and a # Source: comment.
func Join(files []File) []byte {
	var b bytes.Buffer
	for _, f := range files {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", f.Name, strings.Trim(f.Body, "\n"))
	}
	return b.Bytes()
}

// Lint is `helm lint dir -f valuesFile`. It returns every finding at
// warning level or above (helm lint fails on errors; warnings here too).
func Lint(dir, valuesFile string) ([]string, error) {
	vals, err := Values(valuesFile)
	if err != nil {
		return nil, err
	}
	res := lint.All(dir, vals, "default", false)
	var msgs []string
	for _, m := range res.Messages {
		if m.Severity >= support.WarningSev {
			msgs = append(msgs, m.Error())
		}
	}
	return msgs, nil
}

// Paths relative to deploy/ (the module root, where tests and
// cmd/k8s-manifests run).
const (
	Dir         = "helm/fabric"
	PlainValues = "helm/fabric/ci/jwt-values.yaml"
	PlainFile   = "k8s/fabric.yaml"
)

// Plain renders the plain manifests: the chart with valuesFile, under a
// header saying where they come from.
func Plain(dir, valuesFile string) ([]byte, error) {
	files, err := Template(dir, valuesFile)
	if err != nil {
		return nil, err
	}
	header := "# GENERATED from the Helm chart deploy/helm/fabric with " + strings.TrimPrefix(valuesFile, dir+"/") + "\n" +
		"# (release name \"" + Release + "\") by `task k8s` (cd deploy && go run ./cmd/k8s-manifests).\n" +
		"# Do not edit: change the chart and regenerate; deploy tests fail when this is stale.\n" +
		"# Needs Secret fabric-jwt (key secret) with the HS256 key clients' tokens are signed with:\n" +
		"#   kubectl create secret generic fabric-jwt --from-literal=secret=\"$(openssl rand -hex 32)\"\n"
	return append([]byte(header), Join(files)...), nil
}
