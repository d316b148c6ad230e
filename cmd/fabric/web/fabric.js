// fabric.js — a small Phoenix Channels v2 client for Fabric. ES module, no
// dependencies. Works in browsers and in Node ≥ 20 (pass a WebSocket class,
// e.g. the one from the `ws` package, as opts.WebSocket; LongPoll uses fetch).
// Transports: WebSocket (default), LongPoll (opts.transport: "longpoll"), or
// WebSocket with an automatic LongPoll fallback (opts.longPollFallbackMs).
//
//   import { FabricSocket, trackOffsets } from "./fabric.js";
//   const socket = new FabricSocket("ws://127.0.0.1:4000/socket/websocket");
//   socket.connect();
//   const ch = socket.channel("room:lobby", () => ({}));
//   trackOffsets(ch);                      // resume from the last offset on rejoin
//   ch.on("new_msg", (payload, { offset, binary }) => console.log(payload, offset));
//   await ch.join();
//   await ch.push("new_msg", { body: "hi" });
//   const presence = new Presence(ch);    // presence_state / presence_diff
//   presence.onSync(() => console.log(presence.list()));
//
// Wire format (Phoenix v2): text frames are [join_ref, ref, topic, event,
// payload]; binary frames are kind 0 (push), 1 (reply) and 2 (broadcast).
// Fabric puts a message's stream offset (a decimal string) in the ref slot of
// delivered messages and sends [null, "<offset>", topic, "fabric:offset", {"offset": "<offset>"}]
// after a binary broadcast, which has no ref slot. Over LongPoll every
// message is JSON: binary payloads arrive as {"base64": "…"} (with the offset
// in the ref slot) and are handed to handlers as ArrayBuffers, binary: true.

const VSN = "2.0.0";
const KIND_PUSH = 0, KIND_REPLY = 1, KIND_BROADCAST = 2;
const REJOIN_MS = [1000, 2000, 5000, 10000];

const pick = (list, tries) => list[Math.min(tries, list.length - 1)];
const evaluate = (v) => (typeof v === "function" ? v() : v) || {};

export class FabricSocket {
  /**
   * @param {string} url  ws(s)://host/socket/websocket (a trailing "/websocket" is added if missing)
   * @param {object} [opts]
   * @param {object|function} [opts.params]  query parameters, re-evaluated on every (re)connect
   * @param {string|function} [opts.authToken]  sent as the "base64url.bearer.phx.*" subprotocol (phoenix.js 1.8 style)
   * @param {function} [opts.WebSocket]  WebSocket class (default: globalThis.WebSocket)
   * @param {number} [opts.heartbeatMs=30000]
   * @param {number[]} [opts.reconnectMs]  backoff by attempt; the last value repeats
   * @param {number} [opts.timeoutMs=10000]  join/push reply timeout
   * @param {string} [opts.transport="websocket"]  "websocket" or "longpoll"
   * @param {number} [opts.longPollFallbackMs]  like phoenix.js: if the WebSocket errors before it
   *   opens, or does not open and answer its first heartbeat within this time, use LongPoll
   *   from then on (for this socket's life)
   * @param {function} [opts.fetch]  fetch for LongPoll (default: globalThis.fetch)
   * @param {number} [opts.longPollTimeoutMs=20000]  abort a held poll after this long
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.params = opts.params || {};
    this.authToken = opts.authToken;
    this.WebSocket = opts.WebSocket || globalThis.WebSocket;
    this.heartbeatMs = opts.heartbeatMs ?? 30000;
    this.reconnectMs = opts.reconnectMs || [100, 500, 1000, 2000, 5000];
    this.timeoutMs = opts.timeoutMs ?? 10000;
    this.fetch = opts.fetch || ((...a) => globalThis.fetch(...a));
    this.longPollTimeoutMs = opts.longPollTimeoutMs ?? 20000;
    this.transport = String(opts.transport || "websocket").toLowerCase() === "longpoll" ? "LongPoll" : "WebSocket";
    this.fallbackMs = this.transport === "WebSocket" && opts.longPollFallbackMs > 0 ? opts.longPollFallbackMs : 0;
    this.fallbackTimer = null;
    this.wsEverOpened = false;
    this.transportCbs = new Set();
    this.state = "closed";
    this.channels = [];
    this.ws = null;
    this.ref = 0;
    this.pending = new Map(); // ref -> {onReply(status, response), onDrop()}
    this.stateCbs = new Set();
    this.wanted = false; // connect() called and not disconnect()
    this.tries = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.heartbeatRef = null;
  }

  /** cb(state) for "connecting" | "open" | "closed"; returns an unsubscribe function. */
  onState(cb) {
    this.stateCbs.add(cb);
    return () => this.stateCbs.delete(cb);
  }

  /** cb(transport) when the transport changes ("WebSocket" -> "LongPoll" on fallback). */
  onTransport(cb) {
    this.transportCbs.add(cb);
    return () => this.transportCbs.delete(cb);
  }

  makeRef() {
    this.ref += 1;
    return String(this.ref);
  }

  /** The transport's endpoint: ws(s)://…/websocket, or http(s)://…/longpoll for LongPoll. */
  endpointURL(transport = this.transport) {
    const u = new URL(this.url);
    u.pathname = u.pathname.replace(/\/(websocket|longpoll)$/, "").replace(/\/?$/, transport === "LongPoll" ? "/longpoll" : "/websocket");
    if (transport === "LongPoll") u.protocol = u.protocol === "wss:" || u.protocol === "https:" ? "https:" : "http:";
    for (const [k, v] of Object.entries(evaluate(this.params))) u.searchParams.set(k, String(v));
    u.searchParams.delete("vsn");
    u.searchParams.set("vsn", VSN); // vsn last, as phoenix.js does
    return u.toString();
  }

  connect() {
    this.wanted = true;
    if (this.ws || this.reconnectTimer) return;
    this.open();
  }

  disconnect(code = 1000, reason = "") {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.disarmFallback();
    if (this.ws) {
      const ws = this.ws;
      this.closed(ws);
      try { ws.close(code, reason); } catch { /* already closing */ }
    } else {
      this.setState("closed");
    }
  }

  channel(topic, params) {
    const ch = new FabricChannel(this, topic, params);
    this.channels.push(ch);
    return ch;
  }

  // --- internals ---------------------------------------------------------

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    for (const cb of [...this.stateCbs]) cb(s);
  }

  open() {
    this.reconnectTimer = null;
    this.setState("connecting");
    let ws;
    try {
      const token = evaluate(this.authToken);
      if (this.transport === "LongPoll") {
        ws = new LongPollConn(this.endpointURL(), {
          fetch: this.fetch,
          authToken: typeof token === "string" && token ? token : null,
          timeoutMs: this.longPollTimeoutMs,
        });
      } else {
        const protocols = typeof token === "string" && token
          ? ["phoenix", "base64url.bearer.phx." + btoa(token).replace(/=+$/, "")]
          : undefined;
        if (this.fallbackMs && !this.fallbackTimer) this.armFallback();
        ws = new this.WebSocket(this.endpointURL(), protocols);
      }
    } catch (err) {
      this.ws = null;
      this.setState("closed");
      if (this.fallbackMs && !this.wsEverOpened) return this.fallBack();
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    const lp = ws instanceof LongPollConn;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.setState("open");
      if (!lp) {
        this.wsEverOpened = true;
        if (this.fallbackMs) {
          // Healthy once the first heartbeat is answered, within fallbackMs.
          this.armFallback();
          this.heartbeat();
        } else {
          this.scheduleHeartbeat();
        }
      }
      for (const ch of this.channels) ch.socketOpened();
    };
    ws.onmessage = (e) => { if (this.ws === ws) this.receive(e.data); };
    ws.onerror = () => {
      // An error before the WebSocket ever opened: fall back at once.
      if (this.ws === ws && !lp && this.fallbackMs && !this.wsEverOpened) this.fallBack();
    }; // otherwise onclose follows
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.closed(ws);
      this.scheduleReconnect();
    };
  }

  armFallback() {
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = setTimeout(() => this.fallBack(), this.fallbackMs);
  }

  disarmFallback() {
    clearTimeout(this.fallbackTimer);
    this.fallbackTimer = null;
  }

  // fallBack switches this socket to LongPoll for good and connects with it.
  fallBack() {
    if (!this.fallbackMs) return;
    this.fallbackMs = 0;
    this.disarmFallback();
    const ws = this.ws;
    if (ws) {
      this.closed(ws); // errors the channels if it had opened; they rejoin on open
      try { ws.close(); } catch { /* not open yet */ }
    }
    this.transport = "LongPoll";
    for (const cb of [...this.transportCbs]) cb(this.transport);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.tries = 0;
    if (this.wanted) this.open();
  }

  // closed tears down everything tied to the transport ws.
  closed(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    this.ws = null;
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.heartbeatRef = null;
    this.setState("closed");
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.onDrop();
    for (const ch of this.channels) ch.socketClosed();
  }

  scheduleReconnect() {
    if (!this.wanted || this.reconnectTimer) return;
    const ms = pick(this.reconnectMs, this.tries);
    this.tries += 1;
    this.reconnectTimer = setTimeout(() => this.open(), ms);
  }

  scheduleHeartbeat() {
    clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = setTimeout(() => this.heartbeat(), this.heartbeatMs);
  }

  heartbeat() {
    const ws = this.ws;
    if (!ws || ws instanceof LongPollConn) return; // no heartbeats on LongPoll, like phoenix.js
    if (this.heartbeatRef) {
      // The previous heartbeat got no reply within heartbeatMs.
      this.closed(ws);
      try { ws.close(1000, "heartbeat timeout"); } catch { /* ignore */ }
      this.scheduleReconnect();
      return;
    }
    const ref = this.makeRef();
    this.heartbeatRef = ref;
    this.pending.set(ref, {
      onReply: () => {
        if (this.heartbeatRef === ref) this.heartbeatRef = null;
        if (this.fallbackMs && this.ws === ws) { // the WebSocket is healthy: no fallback any more
          this.fallbackMs = 0;
          this.disarmFallback();
        }
      },
      onDrop: () => {},
    });
    this.sendText([null, ref, "phoenix", "heartbeat", {}]);
    this.scheduleHeartbeat();
  }

  sendText(msg) {
    if (!this.ws || this.state !== "open") return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  sendBinaryPush(joinRef, ref, topic, event, payload) {
    if (!this.ws || this.state !== "open") return false;
    const enc = new TextEncoder();
    const [j, r, t, e] = [joinRef, ref, topic, event].map((s) => enc.encode(s || ""));
    for (const f of [j, r, t, e]) if (f.length > 255) throw new RangeError("binary frame field longer than 255 bytes");
    const body = new Uint8Array(payload);
    const out = new Uint8Array(5 + j.length + r.length + t.length + e.length + body.length);
    out.set([KIND_PUSH, j.length, r.length, t.length, e.length]);
    let at = 5;
    for (const f of [j, r, t, e, body]) { out.set(f, at); at += f.length; }
    this.ws.send(out.buffer);
    return true;
  }

  // request sends a channel message and calls onReply(status, response)
  // or onDrop() when the transport closes first.
  request(msg, onReply, onDrop, binary = false) {
    const ref = msg[1];
    this.pending.set(ref, { onReply, onDrop });
    const sent = binary ? this.sendBinaryPush(...msg) : this.sendText(msg);
    if (!sent) {
      this.pending.delete(ref);
      onDrop();
    }
    return ref;
  }

  receive(data) {
    let msg;
    try {
      msg = typeof data === "string" ? decodeText(data) : decodeBinary(toArrayBuffer(data));
    } catch {
      return; // not a Phoenix v2 frame: ignore
    }
    if (!msg) return;
    if (this.transport === "LongPoll" && !msg.binary) unwrapBase64(msg);
    this.tries = 0; // the server talks to us: reset the reconnect backoff
    const { joinRef, ref, topic, event, payload } = msg;
    // Channels see the message first (so onMessage hooks observe a join
    // reply before it changes the channel's state), then the reply settles.
    for (const ch of [...this.channels]) {
      if (ch.topic === topic) ch.deliver(msg);
    }
    if (event === "phx_reply" && ref != null && this.pending.has(ref)) {
      const p = this.pending.get(ref);
      this.pending.delete(ref);
      p.onReply(payload && payload.status, payload ? payload.response : undefined);
    }
  }
}

export class FabricChannel {
  constructor(socket, topic, params) {
    this.socket = socket;
    this.topic = topic;
    this.params = typeof params === "function" ? params : () => params || {};
    this.state = "closed"; // closed | joining | joined | errored
    this.joinRef = null;
    this.joined = false; // join() called and not left
    this.bindings = new Map(); // event -> Set(cb)
    this.anyCbs = new Set();
    this.stateCbs = new Set();
    this.joinCbs = new Set();
    this.buffer = []; // pushes waiting for the join
    this.first = null; // {resolve, reject} of the first join()
    this.rejoinTimer = null;
    this.joinTimer = null;
    this.rejoinTries = 0;
  }

  /** on(event, (payload, {offset, binary}) => …); returns an unsubscribe function. */
  on(event, cb) {
    if (!this.bindings.has(event)) this.bindings.set(event, new Set());
    this.bindings.get(event).add(cb);
    return () => this.bindings.get(event)?.delete(cb);
  }

  /** onAny((event, payload, {offset, binary}) => …) for every event (not replies). */
  onAny(cb) {
    this.anyCbs.add(cb);
    return () => this.anyCbs.delete(cb);
  }

  /** cb(state) for "joining" | "joined" | "errored" | "closed". */
  onState(cb) {
    this.stateCbs.add(cb);
    return () => this.stateCbs.delete(cb);
  }

  /** cb(status, response, {rejoin}) for every join reply, including automatic rejoins. */
  onJoin(cb) {
    this.joinCbs.add(cb);
    return () => this.joinCbs.delete(cb);
  }

  /**
   * Hook called with every message for this channel (replies included), before
   * handlers; same signature as phoenix.js Channel#onMessage, so helpers such
   * as trackOffsets can wrap either. Returns the payload handed to handlers.
   */
  onMessage(event, payload, ref, joinRef) {
    return payload;
  }

  join() {
    if (this.joined) throw new Error(`join() called twice on ${this.topic}`);
    this.joined = true;
    for (const other of this.socket.channels) {
      if (other !== this && other.topic === this.topic && other.joined) other.leave();
    }
    if (!this.socket.channels.includes(this)) this.socket.channels.push(this);
    const p = new Promise((resolve, reject) => { this.first = { resolve, reject }; });
    this.setState("joining");
    this.sendJoin();
    return p;
  }

  push(event, payload = {}) {
    if (!this.joined) return Promise.reject({ reason: "not_joined" });
    return new Promise((resolve, reject) => {
      const item = { event, payload, resolve, reject };
      item.timer = setTimeout(() => {
        this.buffer = this.buffer.filter((b) => b !== item);
        if (item.ref) this.socket.pending.delete(item.ref);
        reject({ reason: "timeout" });
      }, this.socket.timeoutMs);
      if (this.state === "joined") this.sendPush(item);
      else this.buffer.push(item);
    });
  }

  leave() {
    if (this.joined && this.joinRef) {
      this.socket.sendText([this.joinRef, this.socket.makeRef(), this.topic, "phx_leave", {}]);
    }
    this.close({ reason: "left" });
    return Promise.resolve();
  }

  // --- internals ---------------------------------------------------------

  setState(s) {
    if (s === this.state) return;
    this.state = s;
    for (const cb of [...this.stateCbs]) cb(s);
  }

  sendJoin() {
    clearTimeout(this.rejoinTimer);
    this.rejoinTimer = null;
    if (!this.joined || this.socket.state !== "open") return; // sent on open
    const ref = this.socket.makeRef();
    this.joinRef = ref;
    this.setState("joining");
    const rejoin = !this.first;
    clearTimeout(this.joinTimer);
    this.joinTimer = setTimeout(() => {
      if (this.joinRef !== ref) return;
      this.socket.pending.delete(ref);
      this.socket.sendText([ref, this.socket.makeRef(), this.topic, "phx_leave", {}]);
      this.settleFirst("reject", { reason: "timeout" });
      this.errored();
    }, this.socket.timeoutMs);
    this.socket.request(
      [ref, ref, this.topic, "phx_join", evaluate(this.params)],
      (status, response) => {
        if (this.joinRef !== ref) return;
        clearTimeout(this.joinTimer);
        for (const cb of [...this.joinCbs]) cb(status, response, { rejoin });
        if (status === "ok") {
          this.rejoinTries = 0;
          this.setState("joined");
          this.settleFirst("resolve", response);
          const buffered = this.buffer;
          this.buffer = [];
          for (const item of buffered) this.sendPush(item);
        } else {
          this.settleFirst("reject", response);
          this.close(response);
        }
      },
      () => {}, // transport closed: socketClosed() marks us errored, rejoin on open
    );
  }

  settleFirst(how, value) {
    const f = this.first;
    this.first = null;
    if (f) f[how](value);
  }

  sendPush(item) {
    const binary = item.payload instanceof ArrayBuffer;
    item.ref = this.socket.makeRef();
    this.socket.request(
      [this.joinRef, item.ref, this.topic, item.event, item.payload],
      (status, response) => {
        clearTimeout(item.timer);
        if (status === "ok") item.resolve(response);
        else item.reject(status === "error" ? response : { status, response });
      },
      () => {
        clearTimeout(item.timer);
        item.reject({ reason: "disconnected" });
      },
      binary,
    );
  }

  errored() {
    if (!this.joined) return;
    clearTimeout(this.joinTimer);
    this.setState("errored");
    if (this.socket.state === "open") {
      const ms = pick(REJOIN_MS, this.rejoinTries);
      this.rejoinTries += 1;
      clearTimeout(this.rejoinTimer);
      this.rejoinTimer = setTimeout(() => this.sendJoin(), ms);
    }
  }

  close(payload) {
    this.joined = false;
    this.joinRef = null;
    clearTimeout(this.joinTimer);
    clearTimeout(this.rejoinTimer);
    const buffered = this.buffer;
    this.buffer = [];
    for (const item of buffered) {
      clearTimeout(item.timer);
      item.reject({ reason: "closed" });
    }
    this.settleFirst("reject", payload);
    this.socket.channels = this.socket.channels.filter((c) => c !== this);
    this.setState("closed");
  }

  socketOpened() {
    this.rejoinTries = 0;
    if (this.joined) this.sendJoin();
  }

  socketClosed() {
    if (this.joined) {
      clearTimeout(this.rejoinTimer);
      this.errored();
    }
  }

  deliver(msg) {
    const { joinRef, ref, event, binary } = msg;
    if (joinRef != null && joinRef !== "" && joinRef !== this.joinRef) return; // stale instance
    const payload = this.onMessage(event, msg.payload, ref, joinRef);
    if (event === "phx_reply") return;
    if (event === "phx_close" && this.joined) this.close(payload);
    else if (event === "phx_error" && this.joined) {
      this.joinRef = null;
      this.errored();
    }
    const offset = isOffsetCarrier(event) ? ref ?? null : null;
    const cbs = this.bindings.get(event);
    if (cbs) for (const cb of [...cbs]) cb(payload, { offset, binary });
    for (const cb of [...this.anyCbs]) cb(event, payload, { offset, binary });
  }
}

// Control events reuse the ref slot for something other than an offset.
function isOffsetCarrier(event) {
  return !event.startsWith("phx_") && !event.startsWith("chan_reply_");
}

// Over LongPoll the gateway sends binary payloads as {"base64": "…"}: give
// handlers the bytes, as over WebSocket. Replies and phx_* events are kept.
function unwrapBase64(msg) {
  const p = msg.payload;
  if (msg.event.startsWith("phx_") || !p || typeof p !== "object" || Array.isArray(p)) return;
  const keys = Object.keys(p);
  if (keys.length !== 1 || keys[0] !== "base64" || typeof p.base64 !== "string") return;
  try {
    const bin = atob(p.base64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    msg.payload = bytes.buffer;
    msg.binary = true;
  } catch { /* not base64: leave it as JSON */ }
}

function toBase64(buf) {
  const bytes = new Uint8Array(buf);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(bin);
}

// LongPollConn speaks Phoenix's LongPoll protocol behind the small part of the
// WebSocket interface FabricSocket uses (onopen, onmessage, onerror, onclose,
// send, close). GET opens a session ({"status":410,"token":S}), held GETs with
// &token=S return {"status":200|204,"token":S,"messages":["<frame>",…]}; sends
// are batched into POSTs of ndjson lines (text frames, or base64 of binary
// frames), one in flight at a time, at most 100 lines each.
class LongPollConn {
  constructor(endpoint, { fetch, authToken, timeoutMs }) {
    this.endpoint = endpoint;
    this.fetch = fetch;
    this.authToken = authToken;
    this.timeoutMs = timeoutMs;
    this.token = null;
    this.readyState = 0; // 0 connecting, 1 open, 3 closed
    this.queue = [];
    this.posting = false;
    this.flushTimer = null;
    this.aborts = new Set();
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    setTimeout(() => this.poll(), 0);
  }

  url() {
    // The session token goes last: Phoenix takes the last "token" value, so
    // a user's params.token does not collide with it.
    return this.endpoint + (this.token ? `&token=${encodeURIComponent(this.token)}` : "&");
  }

  async request(method, body) {
    const ctl = new AbortController();
    this.aborts.add(ctl);
    const timer = setTimeout(() => ctl.abort(), this.timeoutMs);
    try {
      const headers = { Accept: "application/json" };
      if (method === "POST") headers["Content-Type"] = "application/x-ndjson";
      else if (this.authToken) headers["X-Phoenix-AuthToken"] = this.authToken;
      const resp = await this.fetch(this.url(), { method, headers, body, signal: ctl.signal, cache: "no-store" });
      const text = await resp.text();
      try { return JSON.parse(text); } catch { return { status: 500 }; }
    } finally {
      clearTimeout(timer);
      this.aborts.delete(ctl);
    }
  }

  async poll() {
    if (this.readyState === 3) return;
    let resp;
    try {
      resp = await this.request("GET");
    } catch {
      return this.fail(1006, "poll failed");
    }
    if (this.readyState === 3) return;
    const { status, token, messages } = resp || {};
    if (status === 410 && this.token !== null) return this.fail(3410, "session gone"); // rejoin on a new session
    if (typeof token === "string") this.token = token;
    switch (status) {
      case 410: // a new session: open
        this.readyState = 1;
        this.dispatch(this.onopen, {});
        break;
      case 200:
        for (const m of Array.isArray(messages) ? messages : []) {
          if (this.readyState !== 1) return;
          this.dispatch(this.onmessage, { data: m });
        }
        break;
      case 204:
        break;
      case 403:
        return this.fail(1008, "forbidden");
      default:
        return this.fail(1011, `poll status ${status}`);
    }
    this.poll();
  }

  // dispatch calls a handler like a WebSocket event: a throw is reported, and
  // the poll loop goes on.
  dispatch(fn, ev) {
    try {
      fn?.(ev);
    } catch (err) {
      setTimeout(() => { throw err; }, 0);
    }
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("LongPoll session not open");
    this.queue.push(typeof data === "string" ? data : toBase64(data));
    if (!this.posting && !this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), 0);
  }

  async flush() {
    this.flushTimer = null;
    if (this.readyState !== 1 || this.posting || !this.queue.length) return;
    this.posting = true;
    const batch = this.queue.splice(0, 100);
    let resp;
    try {
      resp = await this.request("POST", batch.join("\n"));
    } catch {
      resp = null;
    }
    this.posting = false;
    if (this.readyState !== 1) return;
    if (!resp || resp.status !== 200) return this.fail(1011, "send failed");
    if (this.queue.length) this.flush();
  }

  fail(code, reason) {
    if (this.readyState === 3) return;
    this.onerror?.({ reason });
    this.close(code, reason);
  }

  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearTimeout(this.flushTimer);
    for (const ctl of this.aborts) ctl.abort();
    this.aborts.clear();
    this.queue = [];
    this.onclose?.({ code, reason, wasClean: code === 1000 });
  }
}

function decodeText(text) {
  const a = JSON.parse(text);
  if (!Array.isArray(a) || a.length < 5 || typeof a[2] !== "string" || typeof a[3] !== "string") return null;
  return { joinRef: a[0] ?? null, ref: a[1] ?? null, topic: a[2], event: a[3], payload: a[4], binary: false };
}

function toArrayBuffer(data) {
  if (data instanceof ArrayBuffer) return data;
  if (ArrayBuffer.isView(data)) return data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  throw new TypeError("unsupported frame data");
}

function decodeBinary(buf) {
  const v = new Uint8Array(buf);
  const dec = new TextDecoder();
  const kind = v[0];
  const header = { [KIND_PUSH]: 4, [KIND_REPLY]: 5, [KIND_BROADCAST]: 3 }[kind];
  if (header === undefined || v.length < header) return null;
  const lens = Array.from(v.subarray(1, header));
  let at = header;
  const fields = lens.map((n) => {
    const s = dec.decode(v.subarray(at, at + n));
    at += n;
    return s;
  });
  if (at > v.length) return null;
  const body = buf.slice(at);
  switch (kind) {
    case KIND_PUSH: {
      const [joinRef, topic, event] = fields;
      return { joinRef: joinRef || null, ref: null, topic, event, payload: body, binary: true };
    }
    case KIND_REPLY: {
      const [joinRef, ref, topic, status] = fields;
      return { joinRef: joinRef || null, ref, topic, event: "phx_reply", payload: { status, response: body }, binary: true };
    }
    default: {
      const [topic, event] = fields;
      return { joinRef: null, ref: null, topic, event, payload: body, binary: true };
    }
  }
}

/**
 * trackOffsets remembers the last stream position {epoch, offset} seen on a
 * channel — from join replies, from the ref slot of delivered messages and
 * from "fabric:offset" frames — and makes every rejoin carry it as
 * {"epoch": E, "offset": N} so the gateway can replay what was missed.
 *
 * It only uses two things, both shaped like phoenix.js's Channel: the
 * overridable onMessage(event, payload, ref, joinRef) hook, and a join-params
 * function (channel.params here; phoenix.js keeps it as channel.joinPush.payload).
 *
 * opts.onJoin(info) is called for each join reply with
 * {status, resumed, recovered, reason, epoch, offset}: resumed says whether
 * the join carried a position, recovered/reason are the gateway's answer.
 * Returns the live position object {epoch, offset} (offset a decimal string).
 */
export function trackOffsets(channel, opts = {}) {
  const pos = { epoch: null, offset: null };
  let resumed = false; // whether the latest join carried a position
  const target = channel.joinPush && typeof channel.joinPush.payload === "function" ? channel.joinPush : channel;
  const key = target === channel ? "params" : "payload";
  const baseParams = target[key];
  target[key] = () => {
    const params = { ...(typeof baseParams === "function" ? baseParams() : baseParams) };
    if (pos.offset != null) {
      // A decimal string, as the server sends offsets: a stream sequence
      // is a uint64, past 2^53 a JS number would round it.
      params.offset = pos.offset;
      if (pos.epoch != null) params.epoch = pos.epoch;
    }
    resumed = pos.offset != null;
    return params;
  };

  const inner = channel.onMessage.bind(channel);
  channel.onMessage = (event, payload, ref, joinRef, ...rest) => {
    if (event === "phx_reply") {
      if (ref != null && ref === joinRef) { // the reply to a join
        const resp = (payload && payload.response) || {};
        if (payload && payload.status === "ok" && typeof resp === "object") {
          if (resp.epoch != null) {
            if (pos.epoch != null && String(resp.epoch) !== pos.epoch) pos.offset = null;
            pos.epoch = String(resp.epoch);
          }
          // A recovered resume replays from our offset: keep it, replayed
          // messages advance it. Otherwise the gateway's position is ours.
          if (resp.offset != null && !(resumed && resp.recovered === true)) pos.offset = String(resp.offset);
        }
        if (opts.onJoin) {
          opts.onJoin({
            status: payload && payload.status, resumed,
            recovered: resp.recovered ?? null, reason: resp.reason ?? null,
            epoch: pos.epoch, offset: pos.offset,
          });
        }
      }
    } else if (ref != null && !event.startsWith("phx_") && !event.startsWith("chan_reply_")) {
      pos.offset = String(ref);
    }
    return inner(event, payload, ref, joinRef, ...rest);
  };
  return pos;
}

/**
 * Presence mirrors phoenix.js's Presence: it keeps a channel's presence state
 * from "presence_state" (the full state, pushed after every join) and
 * "presence_diff" ({joins, leaves}) events, with the same merge rules (metas
 * matched by phx_ref). Diffs that arrive before the state of the current join
 * are queued and applied after it.
 *
 *   const presence = new Presence(channel);
 *   presence.onSync(() => render(presence.list((key, { metas }) => [key, metas.length])));
 */
export class Presence {
  constructor(channel, opts = {}) {
    const events = opts.events || { state: "presence_state", diff: "presence_diff" };
    this.channel = channel;
    this.state = nullObject();
    this.pendingDiffs = [];
    this.joinRef = null;
    this.caller = { onJoin() {}, onLeave() {}, onSync() {} };
    this.offs = [
      channel.on(events.state, (newState) => {
        this.joinRef = currentJoinRef(channel);
        const { onJoin, onLeave, onSync } = this.caller;
        this.state = Presence.syncState(this.state, newState, onJoin, onLeave);
        for (const diff of this.pendingDiffs.splice(0)) {
          this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
        }
        onSync();
      }),
      channel.on(events.diff, (diff) => {
        const { onJoin, onLeave, onSync } = this.caller;
        if (this.inPendingSyncState()) {
          this.pendingDiffs.push(diff);
        } else {
          this.state = Presence.syncDiff(this.state, diff, onJoin, onLeave);
          onSync();
        }
      }),
    ];
  }

  onJoin(cb) { this.caller.onJoin = cb; }
  onLeave(cb) { this.caller.onLeave = cb; }
  onSync(cb) { this.caller.onSync = cb; }

  /** list(chooser) maps (key, {metas}) over the state; without chooser, the presences. */
  list(chooser) { return Presence.list(this.state, chooser); }

  inPendingSyncState() {
    return !this.joinRef || this.joinRef !== currentJoinRef(this.channel);
  }

  /** Stops listening to the channel. */
  dispose() {
    for (const off of this.offs) off?.();
  }

  static syncState(currentState, newState, onJoin, onLeave) {
    const state = clone(currentState);
    const joins = nullObject();
    const leaves = nullObject();
    newState = isObject(newState) ? newState : {};
    for (const key of Object.keys(state)) {
      if (!Object.hasOwn(newState, key)) leaves[key] = state[key];
    }
    for (const key of Object.keys(newState)) {
      const newPresence = newState[key];
      if (!isPresence(newPresence)) continue;
      const currentPresence = state[key];
      if (currentPresence) {
        const newRefs = newPresence.metas.map((m) => m.phx_ref);
        const curRefs = currentPresence.metas.map((m) => m.phx_ref);
        const joinedMetas = newPresence.metas.filter((m) => !curRefs.includes(m.phx_ref));
        const leftMetas = currentPresence.metas.filter((m) => !newRefs.includes(m.phx_ref));
        if (joinedMetas.length > 0) joins[key] = { ...clone(newPresence), metas: joinedMetas };
        if (leftMetas.length > 0) leaves[key] = { ...clone(currentPresence), metas: leftMetas };
      } else {
        joins[key] = newPresence;
      }
    }
    return Presence.syncDiff(state, { joins, leaves }, onJoin, onLeave);
  }

  static syncDiff(state, diff, onJoin = () => {}, onLeave = () => {}) {
    const { joins, leaves } = clone(isObject(diff) ? diff : {});
    for (const key of Object.keys(isObject(joins) ? joins : {})) {
      const newPresence = joins[key];
      if (!isPresence(newPresence)) continue;
      const currentPresence = state[key];
      state[key] = clone(newPresence);
      if (currentPresence) {
        const joinedRefs = state[key].metas.map((m) => m.phx_ref);
        const curMetas = currentPresence.metas.filter((m) => !joinedRefs.includes(m.phx_ref));
        state[key].metas.unshift(...curMetas);
      }
      onJoin(key, currentPresence, newPresence);
    }
    for (const key of Object.keys(isObject(leaves) ? leaves : {})) {
      const leftPresence = leaves[key];
      const currentPresence = state[key];
      if (!currentPresence || !isPresence(leftPresence)) continue;
      const refsToRemove = leftPresence.metas.map((m) => m.phx_ref);
      currentPresence.metas = currentPresence.metas.filter((m) => !refsToRemove.includes(m.phx_ref));
      onLeave(key, currentPresence, leftPresence);
      if (currentPresence.metas.length === 0) delete state[key];
    }
    return state;
  }

  static list(presences, chooser = (key, pres) => pres) {
    return Object.keys(presences).map((key) => chooser(key, presences[key]));
  }
}

const nullObject = () => Object.create(null);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isPresence = (p) => isObject(p) && Array.isArray(p.metas);
const currentJoinRef = (ch) => (typeof ch.joinRef === "function" ? ch.joinRef() : ch.joinRef);

// clone deep-copies JSON data; objects get a null prototype, so keys such
// as "__proto__" are plain keys.
function clone(v) {
  if (Array.isArray(v)) return v.map(clone);
  if (!isObject(v)) return v;
  const out = nullObject();
  for (const k of Object.keys(v)) out[k] = clone(v[k]);
  return out;
}

/**
 * natsSubject maps a topic to the NATS subject Fabric uses for it, exactly as
 * the gateway does: "ns:a:b" -> "fabric.ns.a.b"; every byte of a segment
 * outside [A-Za-z0-9_-] is written "=HH" (upper-case hex of its UTF-8 bytes).
 * It does not validate the topic (empty or wildcard segments are refused at join).
 */
export function natsSubject(topic, prefix = "fabric") {
  const segs = String(topic).split(":").map((seg) => {
    let out = "";
    for (const b of new TextEncoder().encode(seg)) {
      const c = String.fromCharCode(b);
      out += /[A-Za-z0-9_-]/.test(c) ? c : "=" + b.toString(16).toUpperCase().padStart(2, "0");
    }
    return out;
  });
  return [prefix, ...segs].join(".");
}
