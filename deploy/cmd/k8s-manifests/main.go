// Command k8s-manifests writes deploy/k8s/fabric.yaml from the Helm chart
// (deploy/helm/fabric with ci/jwt-values.yaml), so the plain manifests and
// the chart are one source. Run from deploy/: go run ./cmd/k8s-manifests
// (task k8s). TestPlainManifestsUpToDate fails when the file is stale.
package main

import (
	"fmt"
	"os"

	"github.com/fabric-rt/fabric/deploy/chart"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "k8s-manifests:", err)
		os.Exit(1)
	}
}

func run() error {
	data, err := chart.Plain(chart.Dir, chart.PlainValues)
	if err != nil {
		return err
	}
	return os.WriteFile(chart.PlainFile, data, 0o644)
}
