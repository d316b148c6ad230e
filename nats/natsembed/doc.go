// Package natsembed runs nats-server inside the Fabric process: the
// single-binary mode of `fabric serve` and the server behind tests.
//
// The gateway talks to it through an in-process connection (ConnectOption),
// so no TCP socket is needed; the optional client port exists for the `nats`
// CLI and for services on the same box.
//
// With Config.ClusterName the server also joins a cluster over routes: the
// node behind `fabric nats` (a NATS-only member of the cluster gateways
// reach with --nats-url, the recommended topology) or, for small installs,
// a `fabric serve` whose embedded server is itself a cluster member.
//
// Config.ConfigFile adds a nats-server configuration file for what Config
// has no field for, above all authentication; Listeners reports, before
// anything starts, every network port the server would open and whether it
// authenticates, so callers can refuse to expose an open one.
package natsembed
