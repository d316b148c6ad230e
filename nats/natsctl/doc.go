// Package natsctl runs cluster-wide control operations over NATS: a
// backend asks every gateway at once (presence, channels, disconnect,
// unsubscribe, revoke, info) and learns which gateways answered.
//
// Three parts, all core NATS except the revocation list:
//
//   - Cluster (the caller's side) implements control.Cluster with a
//     scatter-gather: one request on <prefix>_ctl.req.<op> with a reply
//     inbox, answers collected until every gateway known to be alive
//     answered or the deadline passed. Gateways alive but silent are
//     reported in Coverage.Missing, never dropped silently.
//   - Responder (every gateway) answers those requests from the gateway's
//     local view through the small Local interface, and announces itself
//     with heartbeats on <prefix>_ctl.hb, which is what "alive" means.
//   - Revocations keeps revoked tokens and banned users in a JetStream KV
//     bucket with per-key TTLs (so the list survives restarts and expires
//     with the tokens), watched by every gateway (new entries apply in
//     milliseconds) and consulted at every upgrade and join.
//
// docs/cluster-control.md describes the subjects, message formats and
// the semantics.
package natsctl
