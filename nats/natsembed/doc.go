// Package natsembed runs nats-server inside the Fabric process: the
// single-binary mode of `fabric serve` and the server behind tests.
//
// The gateway talks to it through an in-process connection (ConnectOption),
// so no TCP socket is needed; the optional client port exists for the `nats`
// CLI and for services on the same box.
package natsembed
