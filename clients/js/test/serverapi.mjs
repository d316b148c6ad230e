// Calls every RPC of fabric.v1.ServerAPI with @connectrpc/connect-node, over
// the Connect, gRPC and gRPC-Web protocols, using code protoc-gen-es
// generated from schema/proto (the Go test test/serverapi generates it into
// FABRIC_GEN and runs this script). Prints one JSON line per call:
// {"transport","rpc","code","result"}; code 0 is success.
import { createClient, ConnectError } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { toJson } from "@bufbuild/protobuf";
import { pathToFileURL } from "node:url";
import path from "node:path";

const gen = await import(pathToFileURL(path.join(process.env.FABRIC_GEN, "fabric/v1/api_pb.js")).href);
const baseUrl = process.env.FABRIC_API_URL;
const key = process.env.FABRIC_API_KEY;
const topic = process.env.FABRIC_TOPIC;
const enc = new TextEncoder();

const transports = {
  connect: createConnectTransport({ baseUrl, httpVersion: "1.1" }),
  "connect-json": createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false }),
  grpc: createGrpcTransport({ baseUrl, httpVersion: "2" }),
  "grpc-web": createGrpcWebTransport({ baseUrl, httpVersion: "1.1" }),
};

// Each RPC with its request; responses are printed in the JSON mapping.
// removeMessage removes what this transport published to its own scratch
// topic just before (offset filled in by the loop below).
const calls = (t, scratchOffset) => [
  ["publish", gen.ServerAPI.method.publish, { topic, event: "js-" + t, payload: enc.encode(`{"via":"${t}"}`) }],
  ["publishBatch", gen.ServerAPI.method.publishBatch, { messages: [{ topic, event: "js-batch", payload: enc.encode("{}") }] }],
  ["broadcast", gen.ServerAPI.method.broadcast, { topics: [topic, topic + "x"], event: "js-bc", payload: enc.encode("{}") }],
  ["presence", gen.ServerAPI.method.presence, { topic }],
  ["presenceStats", gen.ServerAPI.method.presenceStats, { topic }],
  ["history", gen.ServerAPI.method.history, { topic, limit: 100 }],
  ["channels", gen.ServerAPI.method.channels, { pattern: "room:*" }],
  ["disconnect", gen.ServerAPI.method.disconnect, { user: "nobody", banSeconds: 1n }],
  ["unsubscribe", gen.ServerAPI.method.unsubscribe, { user: "nobody", topic }],
  ["revoke", gen.ServerAPI.method.revoke, { jti: "js-jti" }],
  ["clearChannel", gen.ServerAPI.method.clearChannel, { topic: "room:js-clear" }],
  ["removeMessage", gen.ServerAPI.method.removeMessage, { topic: "room:js-scratch-" + t, offset: scratchOffset }],
  ["info", gen.ServerAPI.method.info, {}],
];

const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

for (const [name, transport] of Object.entries(transports)) {
  const client = createClient(gen.ServerAPI, transport);
  const scratch = await client.publish({ topic: "room:js-scratch-" + name, event: "scratch", payload: enc.encode("{}") },
    { headers: { Authorization: `Bearer ${key}` }, timeoutMs: 10000 });
  for (const [rpc, method, req] of calls(name, BigInt(scratch.offset))) {
    try {
      const res = await client[rpc](req, { headers: { Authorization: `Bearer ${key}` }, timeoutMs: 10000 });
      out({ transport: name, rpc, code: 0, result: toJson(method.output, res) });
    } catch (e) {
      const ce = ConnectError.from(e);
      out({ transport: name, rpc, code: ce.code, message: ce.rawMessage });
    }
  }
  // Scopes: no credential, and a topic out of the key's scope.
  for (const [what, headers, t] of [["none", {}, topic], ["out-of-scope", { Authorization: `Bearer ${key}` }, "secret:x"]]) {
    try {
      await client.publish({ topic: t, event: "refused" }, { headers, timeoutMs: 10000 });
      out({ transport: name, rpc: "publish/" + what, code: 0 });
    } catch (e) {
      out({ transport: name, rpc: "publish/" + what, code: ConnectError.from(e).code });
    }
  }
}
