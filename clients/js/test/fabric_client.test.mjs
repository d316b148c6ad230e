// Tests for ../fabric.js against tiny fake Phoenix v2 servers: WebSocket
// (ws package) and LongPoll (node:http).
// Run: node --test test/fabric_client.test.mjs   (from clients/js)
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { WebSocket, WebSocketServer } from "ws";
import { FabricSocket, Presence, trackOffsets, natsSubject } from "../fabric.js";

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

// eventually resolves once check() is truthy (polled every 5 ms).
async function eventually(check, timeoutMs = 2000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${check}`);
    await new Promise((r) => setTimeout(r, 5));
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
  srv.send([null, "57", TOPIC, "fabric:offset", { offset: "57" }]);
  assert.deepEqual(await offs.nth(1), [{ offset: "57" }, { offset: "57", binary: false }]);
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
  srv.reply(p, "ok", { offset: "60" });
  assert.deepEqual(await pushed, { offset: "60" });
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
  assert.deepEqual(join2.msg[4], { name: "bob", epoch: "e1", offset: "57" });
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
  assert.deepEqual(join3.msg[4], { name: "bob", epoch: "e1", offset: "65" });
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

// FakeLongPoll is a Phoenix LongPoll endpoint (Phoenix.Transports.LongPoll) on node:http:
// GET without a known session token opens one ({"status":410,"token":S});
// GETs with it are held until messages are queued (200) or for holdMs (204);
// POSTs carry ndjson lines, recorded like FakeServer's frames. Optionally a
// WebSocket endpoint on the same port that never answers anything.
class FakeLongPoll {
  constructor({ holdMs = 150, silentWebSocket = false } = {}) {
    this.holdMs = holdMs;
    this.sessions = new Map(); // token -> {queue, held}
    this.requests = []; // {method, url, headers, body}
    this.frames = []; // {session, msg, binary, raw}
    this.waiters = [];
    this.nextSession = 0;
    this.http = createServer((req, res) => this.handle(req, res));
    if (silentWebSocket) {
      this.wss = new WebSocketServer({ server: this.http, handleProtocols: () => "phoenix" });
      this.wsConns = [];
      this.wss.on("connection", (ws) => { this.wsConns.push(ws); this.wake(); });
    }
  }

  async start() {
    await new Promise((resolve) => this.http.listen(0, "127.0.0.1", resolve));
    this.url = `ws://127.0.0.1:${this.http.address().port}/socket/websocket`;
    return this;
  }

  handle(req, res) {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => { body += c; });
    req.on("end", () => {
      const u = new URL(req.url, "http://x");
      this.requests.push({ method: req.method, url: req.url, headers: req.headers, body });
      this.wake();
      const json = (obj) => { res.writeHead(200, { "content-type": "application/json" }); res.end(JSON.stringify(obj)); };
      if (u.pathname !== "/socket/longpoll") { res.writeHead(404); res.end(); return; }
      const tokens = u.searchParams.getAll("token");
      const token = tokens.at(-1);
      const session = this.sessions.get(token);
      if (req.method === "GET" && !session) {
        if (token && token.startsWith("s")) return json({ status: 410, token: "gone", messages: [] }); // an ended session
        const id = `s${this.nextSession++}`;
        this.sessions.set(id, { id, queue: [], held: null });
        return json({ status: 410, token: id, messages: [] });
      }
      if (!session) return json({ status: 410 });
      if (req.method === "POST") {
        for (const line of body.split("\n")) {
          if (line.startsWith("[")) this.frames.push({ session: session.id, binary: false, msg: JSON.parse(line), ctype: req.headers["content-type"] });
          else this.frames.push({ session: session.id, binary: true, raw: new Uint8Array(Buffer.from(line, "base64")) });
        }
        this.wake();
        return json({ status: 200 });
      }
      const flush = () => {
        clearTimeout(session.held?.timer);
        session.held = null;
        const messages = session.queue.splice(0);
        json({ status: messages.length ? 200 : 204, token: session.id, messages });
      };
      if (session.queue.length) return flush();
      session.held = { flush, timer: setTimeout(flush, this.holdMs) };
    });
  }

  // send queues a frame (as its JSON text) for session id (default: the newest).
  send(msg, id = `s${this.nextSession - 1}`) {
    const s = this.sessions.get(id);
    s.queue.push(JSON.stringify(msg));
    s.held?.flush();
  }

  // end forgets a session: its next poll gets 410.
  end(id) {
    const s = this.sessions.get(id);
    this.sessions.delete(id);
    s?.held?.flush();
  }

  reply(req, status, response) {
    const [joinRef, ref, topic] = req.msg;
    this.send([joinRef, ref, topic, "phx_reply", { status, response }], req.session);
  }

  wake() { for (const w of [...this.waiters]) w(); }

  close() {
    for (const s of this.sessions.values()) clearTimeout(s.held?.timer);
    for (const ws of this.wsConns || []) ws.terminate();
    this.http.closeAllConnections();
    return new Promise((resolve) => this.http.close(resolve));
  }
}
FakeLongPoll.prototype.next = FakeServer.prototype.next;
FakeLongPoll.prototype.until = FakeServer.prototype.until;
FakeLongPoll.prototype.event = function (event, session) {
  return this.next((f) => !f.binary && f.msg[3] === event && (session === undefined || f.session === session));
};

test("LongPoll: session, join, offsets, base64 binary, batched pushes, session gone and resume", async (t) => {
  const srv = await new FakeLongPoll().start();
  const socket = new FabricSocket(srv.url, {
    transport: "longpoll", params: { token: "user 1" }, authToken: "tok", reconnectMs: [20],
  });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  assert.equal(socket.transport, "LongPoll");
  const states = collector();
  socket.onState(states.handler);
  const ch = socket.channel(TOPIC, {});
  const pos = trackOffsets(ch);
  const any = collector();
  ch.onAny(any.handler);
  socket.connect();
  const joined = ch.join();

  const join1 = await srv.event("phx_join");
  assert.equal(join1.session, "s0");
  assert.equal(join1.ctype, "application/x-ndjson");
  const first = srv.requests[0];
  assert.equal(first.method, "GET");
  assert.ok(first.url.startsWith("/socket/longpoll?token=user+1&vsn=2.0.0&"), first.url);
  assert.ok(first.url.endsWith("&"), first.url); // no session token yet
  assert.equal(first.headers["x-phoenix-authtoken"], "tok");
  await eventually(() => srv.requests.some((r) => r.method === "GET" && r.url.includes("token=s0")));
  const polls = srv.requests.filter((r) => r.method === "GET" && r.url.includes("token=s0"));
  assert.ok(polls[0].url.endsWith("&token=s0"), polls[0].url); // the session token last
  assert.ok(srv.requests.filter((r) => r.method === "POST").every((r) => !r.headers["x-phoenix-authtoken"]));
  srv.reply(join1, "ok", { epoch: "e1", offset: "10" });
  await joined;
  assert.equal(socket.state, "open");

  // Text broadcast, and a binary one as {"base64"} with its offset in the ref slot.
  srv.send([null, "11", TOPIC, "new_msg", { body: "hi" }]);
  srv.send([null, "12", TOPIC, "blob", { base64: Buffer.from([0xfa, 0xb1, 0, 42]).toString("base64") }]);
  const [, p1, m1] = await any.nth(1);
  assert.deepEqual([p1, m1], [{ body: "hi" }, { offset: "11", binary: false }]);
  const [ev2, p2, m2] = await any.nth(2);
  assert.equal(ev2, "blob");
  assert.ok(p2 instanceof ArrayBuffer);
  assert.deepEqual([...new Uint8Array(p2)], [0xfa, 0xb1, 0, 42]);
  assert.deepEqual(m2, { offset: "12", binary: true });
  assert.equal(pos.offset, "12");

  // Pushes of one tick go out in one POST, in order; binary as base64 lines.
  const posts = srv.requests.filter((r) => r.method === "POST").length;
  const a = ch.push("new_msg", { n: 1 });
  const b = ch.push("new_msg", { n: 2 });
  const c = ch.push("bin", new Uint8Array([7, 8]).buffer);
  const fa = await srv.event("new_msg");
  const fb = await srv.event("new_msg");
  const fc = await srv.next((f) => f.binary);
  assert.deepEqual([fa.msg[4], fb.msg[4]], [{ n: 1 }, { n: 2 }]);
  assert.deepEqual([...fc.raw.subarray(0, 1)], [0]); // kind 0: push
  assert.deepEqual([...fc.raw.slice(-2)], [7, 8]);
  assert.equal(srv.requests.filter((r) => r.method === "POST").length, posts + 1);
  assert.equal(srv.requests.filter((r) => r.method === "POST").at(-1).body.split("\n").length, 3);
  srv.reply(fa, "ok", { offset: "13" });
  srv.reply(fb, "ok", {});
  const fcRef = new TextDecoder().decode(fc.raw.subarray(5 + fc.raw[1], 5 + fc.raw[1] + fc.raw[2]));
  srv.send([join1.msg[0], fcRef, TOPIC, "phx_reply", { status: "ok", response: {} }]);
  assert.deepEqual(await a, { offset: "13" });
  assert.deepEqual(await b, {});
  assert.deepEqual(await c, {});

  // The session ends: its next poll gets 410, the client opens a new
  // session and rejoins from its offset.
  srv.end("s0");
  const join2 = await srv.event("phx_join", "s1");
  assert.deepEqual(join2.msg[4], { epoch: "e1", offset: "12" });
  assert.notEqual(join2.msg[0], join1.msg[0]);
  srv.reply(join2, "ok", { epoch: "e1", offset: "14", recovered: true });
  await eventually(() => ch.state === "joined");
  assert.deepEqual(states.calls.map((x) => x[0]), ["connecting", "open", "closed", "connecting", "open"]);
  assert.equal(socket.transport, "LongPoll");
});

test("longPollFallbackMs: a WebSocket error before open falls back to LongPoll at once", async (t) => {
  const srv = await new FakeLongPoll().start();
  class FailingWebSocket {
    constructor(url) {
      this.url = url;
      setTimeout(() => { this.onerror?.({}); this.onclose?.({ code: 1006 }); }, 5);
    }
    close() {}
  }
  const socket = new FabricSocket(srv.url, { WebSocket: FailingWebSocket, longPollFallbackMs: 10000, reconnectMs: [20] });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  const transports = collector();
  socket.onTransport(transports.handler);
  assert.equal(socket.transport, "WebSocket");
  const ch = socket.channel(TOPIC, {});
  socket.connect();
  const joined = ch.join();
  const join = await srv.event("phx_join");
  assert.deepEqual(await transports.nth(1), ["LongPoll"]);
  assert.equal(socket.transport, "LongPoll");
  srv.reply(join, "ok", {});
  await joined;
});

test("longPollFallbackMs: an unanswered first heartbeat falls back; a healthy WebSocket stays", async (t) => {
  const lp = await new FakeLongPoll({ silentWebSocket: true }).start();
  const socket = new FabricSocket(lp.url, { WebSocket, longPollFallbackMs: 100, reconnectMs: [20] });
  const ch = socket.channel(TOPIC, {});
  socket.connect();
  const joined = ch.join();
  await lp.until(() => (lp.wsConns.length ? true : undefined)); // the WebSocket opened…
  const join = await lp.event("phx_join"); // …but no heartbeat reply: LongPoll
  assert.equal(socket.transport, "LongPoll");
  lp.reply(join, "ok", {});
  await joined;
  socket.disconnect();
  await lp.close();

  const srv = await new FakeServer().start(); // answers heartbeats
  const healthy = new FabricSocket(srv.url, { WebSocket, longPollFallbackMs: 50 });
  t.after(async () => { healthy.disconnect(); await srv.close(); });
  healthy.connect();
  await srv.event("heartbeat"); // sent at once on open
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(healthy.transport, "WebSocket");
  assert.equal(healthy.state, "open");
  assert.equal(srv.conns.length, 1);
});

test("Presence: state, diffs, queued diffs before the state of each join", async (t) => {
  const srv = await new FakeServer().start();
  const socket = new FabricSocket(srv.url, { WebSocket, reconnectMs: [10], heartbeatMs: 60000 });
  t.after(async () => { socket.disconnect(); await srv.close(); });
  const ch = socket.channel(TOPIC, {});
  const presence = new Presence(ch);
  const syncs = collector();
  const log = [];
  presence.onJoin((key) => log.push(`join ${key}`));
  presence.onLeave((key) => log.push(`leave ${key}`));
  presence.onSync(() => syncs.handler(presence.list((key, { metas }) => `${key}:${metas.length}`)));
  const any = collector();
  ch.onAny(any.handler);
  socket.connect();
  const joined = ch.join();
  const join1 = await srv.event("phx_join");
  srv.reply(join1, "ok", {});
  await joined;
  const jr = join1.msg[0];

  // A diff before the state is queued and applied after it.
  srv.send([null, null, TOPIC, "presence_diff", { joins: { u2: { metas: [{ phx_ref: "b" }] } }, leaves: {} }]);
  srv.send([jr, null, TOPIC, "presence_state", { u1: { metas: [{ phx_ref: "a", online_at: 1 }] } }]);
  assert.deepEqual((await syncs.nth(1))[0], ["u1:1", "u2:1"]);
  assert.equal(syncs.calls.length, 1);
  srv.send([null, null, TOPIC, "presence_diff", { joins: { u1: { metas: [{ phx_ref: "c" }] } }, leaves: {} }]);
  assert.deepEqual((await syncs.nth(2))[0], ["u1:2", "u2:1"]);
  srv.send([null, null, TOPIC, "presence_diff", { joins: {}, leaves: { u1: { metas: [{ phx_ref: "a" }, { phx_ref: "c" }] } } }]);
  assert.deepEqual((await syncs.nth(3))[0], ["u2:1"]);
  assert.deepEqual(log, ["join u1", "join u2", "join u1", "leave u1"]);
  // An update: old meta in leaves, new one (phx_ref_prev) in joins.
  srv.send([null, null, TOPIC, "presence_diff", {
    joins: { u2: { metas: [{ phx_ref: "d", phx_ref_prev: "b", away: true }] } },
    leaves: { u2: { metas: [{ phx_ref: "b" }] } },
  }]);
  await syncs.nth(4);
  assert.deepEqual(presence.list((k, { metas }) => [k, metas.map((m) => m.phx_ref)]), [["u2", ["d"]]]);

  // After a reconnect, diffs wait for the new join's state again; the new
  // state replaces the old one (u2 left while we were away).
  srv.conns[0].terminate();
  const join2 = await srv.event("phx_join");
  srv.reply(join2, "ok", {});
  await eventually(() => ch.state === "joined");
  srv.send([null, null, TOPIC, "presence_diff", { joins: { __proto__x: { metas: [{ phx_ref: "e" }] } }, leaves: {} }]);
  srv.send([null, null, TOPIC, "new_msg", { body: "sync point" }]);
  await any.nth(any.calls.length + 1);
  assert.equal(syncs.calls.length, 4); // queued
  srv.send([join2.msg[0], null, TOPIC, "presence_state", JSON.parse('{"u3":{"metas":[{"phx_ref":"f"}]},"__proto__":{"metas":[{"phx_ref":"g"}]}}')]);
  assert.deepEqual((await syncs.nth(5))[0].sort(), ["__proto__:1", "__proto__x:1", "u3:1"]);
  assert.equal(Object.getPrototypeOf({}).metas, undefined); // nothing polluted
  // Presence events are ordinary events for onAny (apps filter them).
  assert.ok(any.calls.some((c) => c[0] === "presence_state"));
});
