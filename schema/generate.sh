#!/usr/bin/env bash
# Regenerates the Go code of schema/proto into schema/gen (committed).
#
#   schema/generate.sh          # writes schema/gen/... in this repository
#   schema/generate.sh DIR      # writes DIR/schema/gen/... instead (gen_test.go)
#
# Needs protoc (Debian: apt-get install -y protobuf-compiler). protoc-gen-go
# and protoc-gen-connect-go are built from the google.golang.org/protobuf and
# connectrpc.com/connect versions go.mod requires, so the generated code
# always matches the runtime libraries.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root}"

if ! command -v protoc >/dev/null 2>&1; then
	echo "generate.sh: protoc not found; install it with: apt-get install -y protobuf-compiler" >&2
	exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cd "$root"
go build -o "$tmp/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$tmp/protoc-gen-connect-go" connectrpc.com/connect/cmd/protoc-gen-connect-go

mkdir -p "$out"
# module= strips the module path from go_package, so the file lands in
# $out/schema/gen/fabricv1/.
find schema/proto -name '*.proto' -print0 | sort -z | xargs -0 \
	protoc --proto_path=schema/proto \
		--plugin=protoc-gen-go="$tmp/protoc-gen-go" \
		--go_out="$out" \
		--go_opt=module=github.com/fabric-rt/fabric \
		--plugin=protoc-gen-connect-go="$tmp/protoc-gen-connect-go" \
		--connect-go_out="$out" \
		--connect-go_opt=module=github.com/fabric-rt/fabric
