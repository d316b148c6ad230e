// fabric.js — Fabric's own small Phoenix Channels client (WebSocket and
// LongPoll, offsets and resume, presence). No dependencies.
//
// The implementation lives in cmd/fabric/web/fabric.js, because the demo
// page serves it from files embedded in the binary and go:embed cannot
// reach outside cmd/fabric; this module re-exports it for apps and tests.
export * from "../../cmd/fabric/web/fabric.js";
