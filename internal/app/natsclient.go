package app

import "github.com/nats-io/nats.go"

// NATSClientOptions turns cfg's NATS credentials and TLS settings (the
// --nats-* flags) into nats.go options, as the gateway uses them, for the
// other commands that connect to NATS with the same flags (fabric channel).
func NATSClientOptions(cfg Config) ([]nats.Option, error) { return externalNATSOptions(cfg) }
