// Tests for ../fabric.js against a tiny fake Phoenix v2 server (ws package).
// Run: node --test test/fabric_client.test.mjs   (from clients/js)
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket, WebSocketServer } from "ws";
import { FabricSocket, trackOffsets, natsSubject } from "../fabric.js";

const TOPIC = "room:lobby";

// FakeServer records every frame each client sends and lets the test wait
// for one. It answers heartbeats unless told not to.
class FakeServer {
  constructor({ answerHeartbeats = true } = {}) {
    this.answerHeartbeats = answerHeartbeats;
    this.frames = []; // {conn, msg, binary, raw}
    this.waiters = [];
    this.conns = [];
    this.requests = [];
    this.wss = new WebSocketServer({
      host: "127.0.0.1",
      port: 0,
      handleProtocols: (protocols) => (protocols.has("phoenix") ? "phoenix" : false),
    });
    this.wss.on("connection", (ws, req) => {
      const conn = this.conns.length;
      this.conns.push(ws);
      this.requests.push(req);
      ws.on("message", (data, isBinary) => {
        const f = isBinary
          ? { conn, binary: true, raw: new Uint8Array(data) }
          : { conn, binary: false, msg: JSON.parse(data.toString()) };
        if (!isBinary && this.answerHeartbeats && f.msg[2] === "phoenix" && f.msg[3] === "heartbeat") {
          ws.send(JSON.stringify([null, f.msg[1], "phoenix", "phx_reply", { status: "ok", response: {} }]));
        }
        this.frames.push(f);
        this.wake();
      });
      this.wake();
    });
  }

  async start() {
    await new Promise((resolve) => this.wss.once("listening", resolve));
    this.url = `ws://127.0.0.1:${this.wss.address().port}/socket/websocket`;
    return this;
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  // next resolves with the first recorded frame (at or after index `from`)
  // matching pred, and removes it from further searches.
  next(pred, timeoutMs = 2000) {
    return this.until(() => {
      const i = this.frames.findIndex((f) => !f.taken && pred(f));
      if (i < 0) return undefined;
      this.frames[i].taken = true;
      return this.frames[i];
    }, timeoutMs);
  }

  until(check, timeoutMs = 2000) {
    return new Promise((resolve, reject) => {
      const attempt = () => {
        const v = check();
        if (v === undefined) return false;
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== attempt);
        resolve(v);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== attempt);
        reject(new Error("timed out waiting"));
      }, timeoutMs);
      if (!attempt()) this.waiters.push(attempt);
    });
  }

  event(event, conn) {
    return this.next((f) => !f.binary && f.msg[3] === event && (conn === undefined || f.conn === conn));
  }

  send(msg, conn = this.conns.length - 1) {
    this.conns[conn].send(JSON.stringify(msg));
  }

  sendBinary(bytes, conn = this.conns.length - 1) {
    this.conns[conn].send(bytes, { binary: true });
  }

  reply(req, status, response) {
    const [joinRef, ref, topic] = req.msg;
    this.send([joinRef, ref, topic, "phx_reply", { status, response }], req.conn);
  }

  close() {
    for (const ws of this.conns) ws.terminate();
    return new Promise((resolve) => this.wss.close(resolve));
  }
}

// broadcastFrame builds a v2 binary broadcast (kind 2).
function broadcastFrame(topic, event, payload) {
  const t = Buffer.from(topic), e = Buffer.from(event);
  return Buffer.concat([Buffer.from([2, t.length, e.length]), t, e, Buffer.from(payload)]);
}

// collector returns a handler and a function waiting for its n-th call.
function collector() {
  const calls = [];
  let wake = () => {};
  const handler = (...args) => { calls.push(args); wake(); };
  const nth = (n, timeoutMs = 2000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`handler not called ${n} times`)), timeoutMs);
    const check = () => {
      if (calls.length >= n) { clearTimeout(timer); resolve(calls[n - 1]); }
    };
    const prev = wake;
    wake = () => { prev(); check(); };
    check();
  });
  return { calls, handler, nth };
}

test("join, broadcasts with offsets, binary, heartbeat, push, reconnect and resume", async (t) => {
  const srv = await new FakeServer().start();
  const states = collector();
  const socket = new FabricSocket(srv.url, {
    WebSocket, params: { token: "t 1" }, heartbeatMs: 40, reconnectMs: [20],
  });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  socket.onState(states.handler);

  let name = "ann";
  const ch = socket.channel(TOPIC, () => ({ name }));
  const joins = collector();
  const pos = trackOffsets(ch, { onJoin: joins.handler });
  const msgs = collector();
  ch.on("new_msg", msgs.handler);
  const blobs = collector();
  ch.on("blob", blobs.handler);
  const any = collector();
  ch.onAny(any.handler);

  socket.connect();
  const joined = ch.join();

  // The join: [ref, ref, topic, "phx_join", params]; params from the function.
  const join1 = await srv.event("phx_join");
  assert.equal(join1.msg.length, 5);
  assert.equal(join1.msg[0], join1.msg[1]);
  assert.equal(join1.msg[2], TOPIC);
  assert.deepEqual(join1.msg[4], { name: "ann" });
  const q = new URL(srv.requests[0].url, "http://x").searchParams;
  assert.equal(q.get("token"), "t 1");
  assert.deepEqual([...q.keys()].at(-1), "vsn");
  assert.equal(q.get("vsn"), "2.0.0");
  assert.equal(srv.requests[0].headers["sec-websocket-protocol"], undefined); // no authToken, no subprotocol
  srv.reply(join1, "ok", { epoch: "e1", offset: "40" });
  assert.deepEqual(await joined, { epoch: "e1", offset: "40" });
  assert.equal(ch.state, "joined");
  assert.deepEqual({ ...pos }, { epoch: "e1", offset: "40" });
  assert.deepEqual((await joins.nth(1))[0], {
    status: "ok", resumed: false, recovered: null, reason: null, epoch: "e1", offset: "40",
  });

  // A broadcast carrying its offset in the ref slot.
  srv.send([null, "42", TOPIC, "new_msg", { body: "hi" }]);
  const [p1, meta1] = await msgs.nth(1);
  assert.deepEqual(p1, { body: "hi" });
  assert.deepEqual(meta1, { offset: "42", binary: false });
  assert.equal(pos.offset, "42");

  // A broadcast without offset (ephemeral namespace).
  srv.send([null, null, TOPIC, "new_msg", { body: "plain" }]);
  const [, meta2] = await msgs.nth(2);
  assert.deepEqual(meta2, { offset: null, binary: false });
  assert.equal(pos.offset, "42");

  // A binary kind-2 broadcast, then the fabric:offset frame carrying its offset.
  srv.sendBinary(broadcastFrame(TOPIC, "blob", [0, 1, 0xfe, 0xff]));
  const [b, bmeta] = await blobs.nth(1);
  assert.ok(b instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(b)], [0, 1, 0xfe, 0xff]);
  assert.deepEqual(bmeta, { offset: null, binary: true });
  const offs = collector();
  ch.on("fabric:offset", offs.handler);
  srv.send([null, "57", TOPIC, "fabric:offset", null]);
  assert.deepEqual(await offs.nth(1), [null, { offset: "57", binary: false }]);
  assert.equal(pos.offset, "57");

  // A message for an old join instance is dropped as stale.
  srv.send(["999", null, TOPIC, "new_msg", { body: "stale" }]);

  // Heartbeats on topic "phoenix"; replies are accepted (no timeout close).
  for (let i = 0; i < 3; i++) {
    const hb = await srv.event("heartbeat");
    assert.equal(hb.msg[0], null);
    assert.equal(hb.msg[2], "phoenix");
    assert.deepEqual(hb.msg[4], {});
    assert.equal(hb.conn, 0);
  }
  assert.equal(srv.conns.length, 1);

  // push resolves with the reply's response, or rejects with the error one.
  const pushed = ch.push("new_msg", { body: "yo" });
  const p = await srv.event("new_msg");
  assert.equal(p.msg[0], join1.msg[0]);
  assert.notEqual(p.msg[1], join1.msg[1]);
  assert.deepEqual(p.msg.slice(2), [TOPIC, "new_msg", { body: "yo" }]);
  srv.reply(p, "ok", { offset: 60 });
  assert.deepEqual(await pushed, { offset: 60 });
  const refused = ch.push("new_msg", { body: "no" });
  srv.reply(await srv.event("new_msg"), "error", { reason: "unauthorized" });
  await assert.rejects(refused, (err) => err.reason === "unauthorized");
  assert.equal(msgs.calls.length, 2); // the stale message never arrived
  assert.deepEqual(any.calls.map((c) => [c[0], c[2].offset]),
    [["new_msg", "42"], ["new_msg", null], ["blob", null], ["fabric:offset", "57"]]);

  // The server drops the connection: the client reconnects and rejoins with
  // freshly evaluated params plus the tracked position.
  name = "bob";
  srv.conns[0].terminate();
  const join2 = await srv.event("phx_join");
  assert.equal(join2.conn, 1);
  assert.equal(join2.msg[0], join2.msg[1]);
  assert.notEqual(join2.msg[0], join1.msg[0]);
  assert.deepEqual(join2.msg[4], { name: "bob", epoch: "e1", offset: 57 });
  assert.deepEqual(states.calls.map((c) => c[0]), ["connecting", "open", "closed", "connecting", "open"]);
  srv.reply(join2, "ok", { epoch: "e1", offset: "70", recovered: true });
  const [info] = await joins.nth(2);
  assert.deepEqual(info, { status: "ok", resumed: true, recovered: true, reason: null, epoch: "e1", offset: "57" });
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(ch.state, "joined");
  // Replayed messages then advance the position.
  srv.send([null, "65", TOPIC, "new_msg", { body: "missed" }]);
  assert.deepEqual(await msgs.nth(3), [{ body: "missed" }, { offset: "65", binary: false }]);
  assert.equal(pos.offset, "65");

  // A join that is not recovered adopts the gateway's position.
  srv.conns[1].terminate();
  const join3 = await srv.event("phx_join");
  assert.deepEqual(join3.msg[4], { name: "bob", epoch: "e1", offset: 65 });
  srv.reply(join3, "ok", { epoch: "e2", offset: "3", recovered: false, reason: "epoch_changed" });
  const [info3] = await joins.nth(3);
  assert.deepEqual(info3, { status: "ok", resumed: true, recovered: false, reason: "epoch_changed", epoch: "e2", offset: "3" });

  // leave sends phx_leave with the current join ref and closes at once.
  await ch.leave();
  const leave = await srv.event("phx_leave");
  assert.equal(leave.msg[0], join3.msg[0]);
  assert.equal(ch.state, "closed");
  await assert.rejects(ch.push("new_msg", {}), (err) => err.reason === "not_joined");
});

test("a missed heartbeat reply closes the connection and reconnects", async (t) => {
  const srv = await new FakeServer({ answerHeartbeats: false }).start();
  const socket = new FabricSocket(srv.url, { WebSocket, heartbeatMs: 30, reconnectMs: [10] });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  const ch = socket.channel(TOPIC);
  socket.connect();
  const joined = ch.join();
  srv.reply(await srv.event("phx_join"), "ok", {});
  await joined;
  await srv.event("heartbeat", 0);
  // No reply: the next tick closes and a new connection rejoins.
  const rejoin = await srv.event("phx_join", 1);
  assert.deepEqual(rejoin.msg[4], {});
});

test("a refused join rejects with the response and closes the channel", async (t) => {
  const srv = await new FakeServer().start();
  const socket = new FabricSocket(srv.url, { WebSocket });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  socket.connect();
  const ch = socket.channel("room:*", { a: 1 });
  const joined = ch.join();
  const join = await srv.event("phx_join");
  assert.deepEqual(join.msg[4], { a: 1 });
  srv.reply(join, "error", { reason: "invalid_topic" });
  await assert.rejects(joined, (err) => err.reason === "invalid_topic");
  assert.equal(ch.state, "closed");
  assert.equal(socket.channels.includes(ch), false);
});

test("binary push, binary reply, server push and authToken subprotocol", async (t) => {
  const srv = await new FakeServer().start();
  const socket = new FabricSocket(srv.url.replace("/websocket", ""), { WebSocket, authToken: () => "tok" });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  socket.connect();
  const ch = socket.channel(TOPIC);
  const direct = collector();
  ch.on("direct", direct.handler);
  const joined = ch.join();
  const join = await srv.event("phx_join");
  assert.equal(new URL(srv.requests[0].url, "http://x").pathname, "/socket/websocket");
  assert.equal(srv.requests[0].headers["sec-websocket-protocol"], "phoenix,base64url.bearer.phx." + btoa("tok").replace(/=+$/, ""));
  srv.reply(join, "ok", {});
  await joined;
  const jr = join.msg[0];

  const pushed = ch.push("bin", new Uint8Array([7, 7, 7]).buffer);
  const f = await srv.next((fr) => fr.binary);
  const [kind, jl, rl, tl, el] = f.raw;
  assert.equal(kind, 0);
  const str = (from, n) => Buffer.from(f.raw.subarray(from, from + n)).toString();
  assert.equal(str(5, jl), jr);
  const ref = str(5 + jl, rl);
  assert.equal(str(5 + jl + rl, tl), TOPIC);
  assert.equal(str(5 + jl + rl + tl, el), "bin");
  assert.deepEqual([...f.raw.subarray(5 + jl + rl + tl + el)], [7, 7, 7]);
  // Binary reply (kind 1).
  const fields = [jr, ref, TOPIC, "ok"].map((s) => Buffer.from(s));
  srv.sendBinary(Buffer.concat([Buffer.from([1, ...fields.map((b) => b.length)]), ...fields, Buffer.from([9])]));
  const resp = await pushed;
  assert.ok(resp instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(resp)], [9]);

  // Server push (kind 0, 4-byte header) with the current join ref.
  const pf = [jr, TOPIC, "direct"].map((s) => Buffer.from(s));
  srv.sendBinary(Buffer.concat([Buffer.from([0, ...pf.map((b) => b.length)]), ...pf, Buffer.from("xy")]));
  const [dp, dmeta] = await direct.nth(1);
  assert.equal(Buffer.from(dp).toString(), "xy");
  assert.deepEqual(dmeta, { offset: null, binary: true });
});

test("natsSubject maps topics like the gateway", () => {
  const cases = {
    "room:lobby": "fabric.room.lobby",
    "news": "fabric.news",
    "ns:a:b": "fabric.ns.a.b",
    "Room_1:a-b": "fabric.Room_1.a-b",
    "room:a.b": "fabric.room.a=2Eb",
    "room:a b": "fabric.room.a=20b",
    "room:a=b": "fabric.room.a=3Db",
    "room:$SYS": "fabric.room.=24SYS",
    "room:é": "fabric.room.=C3=A9",
    "room:日本": "fabric.room.=E6=97=A5=E6=9C=AC",
    "room:\u00a0": "fabric.room.=C2=A0",
  };
  for (const [topic, want] of Object.entries(cases)) assert.equal(natsSubject(topic), want, topic);
});
