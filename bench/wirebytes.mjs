// Bytes on the wire per delivery, Fabric vs Centrifugo, with and without
// permessage-deflate: one client per run offers (or not) compression, 20
// game-state-like JSON messages of ~0.5, 1, 2 and 8 KiB are published
// through each server's HTTP API, and the client's socket bytesRead delta is
// divided by the messages received (docs/compression.md).
//
// Servers (started by hand; see bench/results/compression-wire-bytes.txt):
//   fabric serve --listen 127.0.0.1:18002 --ops-listen off --nats-listen off --compression
//   centrifugo --config cf.json   (v6.9.1; the config is in the results file)
// Run: node bench/wirebytes.mjs
import WebSocket from "../clients/js/node_modules/ws/index.js";
// A game-state-like JSON payload of about `size` bytes (the same for both servers).
function payload(size) {
  const players = [];
  for (let i = 0; players.length === 0 || JSON.stringify({ tick: 1, players }).length < size; i++)
    players.push({ id: "p" + i, x: (i * 37) % 1000, y: (i * 91) % 1000, hp: 100 - (i % 7), team: i % 2 ? "red" : "blue", name: "player_" + i });
  return { tick: 1, players };
}
const sizes = [512, 1024, 2048, 8192];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function measure(kind, deflate) {
  const out = {};
  for (const size of sizes) {
    const data = payload(size);
    let ws, ready, got;
    const msgs = [];
    if (kind === "fabric") {
      ws = new WebSocket("ws://127.0.0.1:18002/socket/websocket?vsn=2.0.0", { perMessageDeflate: deflate });
      await new Promise((r) => ws.on("open", r));
      ws.on("message", (m) => msgs.push(m.toString()));
      ws.send(JSON.stringify(["1", "1", "room:wire", "phx_join", {}]));
    } else {
      ws = new WebSocket("ws://127.0.0.1:18001/connection/websocket", { perMessageDeflate: deflate });
      await new Promise((r) => ws.on("open", r));
      ws.on("message", (m) => msgs.push(m.toString()));
      ws.send(JSON.stringify({ id: 1, connect: {} }));
      await sleep(200);
      ws.send(JSON.stringify({ id: 2, subscribe: { channel: "room:wire" } }));
    }
    await sleep(500);
    const before = ws._socket.bytesRead, n0 = msgs.length;
    const N = 20;
    for (let i = 0; i < N; i++) {
      if (kind === "fabric") {
        await fetch("http://127.0.0.1:18002/api/v1/publish", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ topic: "room:wire", event: "state", data: data }) });
      } else {
        await fetch("http://127.0.0.1:18001/api/publish", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ channel: "room:wire", data }) });
      }
    }
    for (let i = 0; i < 50 && msgs.length - n0 < N; i++) await sleep(100);
    const after = ws._socket.bytesRead;
    const got_ = msgs.length - n0;
    out[size] = { jsonBytes: JSON.stringify(data).length, deliveries: got_, wireBytesPerDelivery: Math.round((after - before) / Math.max(got_, 1)), exampleFrameText: msgs[msgs.length - 1].length };
    ws.close();
    await sleep(100);
  }
  return out;
}
for (const kind of ["fabric", "centrifugo"]) for (const d of [false, true]) console.log(kind, d ? "deflate" : "plain", JSON.stringify(await measure(kind, d)));
