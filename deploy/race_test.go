//go:build race

package deploy_test

// raceEnabled: the test binary was built with -race, so fabricBinary builds
// ./cmd/fabric with -race too and reuses the packages `go test -race ./...`
// already compiled instead of compiling them all a second time.
const raceEnabled = true
