// Package config fills a standard-library *flag.FlagSet from three sources —
// the command line, environment variables and an optional YAML file — so that
// every Fabric setting is declared exactly once, as a flag, and can still be
// supplied the way a given deployment prefers (systemd unit, container env,
// checked-in config file).
//
// # Precedence
//
// For each flag the first source that sets it wins:
//
//	command-line flag  >  environment variable  >  YAML file  >  flag default
//
// Only the winning value is passed to the flag's Set method. That matters for
// flag.Value implementations that accumulate (a repeated "-peer" flag that
// appends): a file value is never appended to an env or command-line value.
// A consequence is that a value shadowed by a higher-precedence source is not
// validated; unknown names, however, are rejected in every source.
//
// # Naming
//
// A flag named "nats-url" is read from the environment variable
// FABRIC_NATS_URL (see EnvName) and from the YAML key "nats-url" or its
// underscore spelling "nats_url". Setting both spellings in one file is an
// error, because one of them would otherwise be silently ignored.
//
// # Strictness
//
// Misconfiguration is an error, never a warning: an unknown flag, a
// FABRIC_-prefixed variable that names no flag, a YAML key that is neither a
// flag nor a registered section, a value a flag rejects, a null YAML value,
// and an unreadable or malformed file all make Load fail. A typo such as
// FABRIC_LISTN would otherwise leave the gateway running on its default
// address with nobody noticing; the error names the source of the bad value
// and, where one is close, suggests the intended name.
//
// # YAML values
//
// A scalar is passed to the flag in its literal YAML spelling ("30s", 8080,
// true), so every flag type works — bool, int, duration, string and custom
// flag.Value types — with the same syntax as on the command line. A sequence
// of scalars is joined with commas ("[a, b]" becomes "a,b"), which is the
// convention comma-separated list flags use; an item that itself contains a
// comma is rejected because the join would split it. Mappings and null values
// are errors for flags.
//
// Structured settings that are not flags (for example "namespaces") are
// registered in Options.Sections and decoded into the caller's value with
// unknown fields rejected.
//
// # Reporting
//
// Sources reports where each effective value came from ("default", "file",
// "env" or "flag"), and Redacted turns that into log/slog attributes with
// secrets hidden, so a server can log its effective configuration at startup.
package config
