// Package serverapi serves fabric.v1.ServerAPI, the backend API of
// schema/proto/fabric/v1/api.proto, from one implementation as gRPC,
// gRPC-Web and the Connect protocol (connectrpc.com/connect on net/http),
// plus one REST path per RPC (POST /api/v1/<rpc>, protojson bodies),
// with gRPC health and server reflection. Credentials are API keys and
// publisher JWTs scoped per RPC family and topic pattern (creds.go);
// cluster-wide RPCs call a control.Cluster, moderation a
// control.Moderator; every admin RPC is audited (audit.go). See
// docs/api.md.
package serverapi
