// Package schema holds Fabric's protobuf definitions (proto/fabric/v1) and
// their generated Go code (gen/fabricv1, committed so that building Fabric
// never needs protoc).
//
// After editing a .proto file, run
//
//	schema/generate.sh
//
// (protoc from Debian's protobuf-compiler package; protoc-gen-go is built
// from the google.golang.org/protobuf version in go.mod). TestGenerated
// regenerates into a temporary directory and fails when the committed code
// is stale.
package schema
