// puppet.mjs: drives the real, unmodified phoenix.js client (npm "phoenix") under Node
// for Fabric's Go end-to-end tests (package internal/testkit/phxnode).
//
// Protocol: newline-delimited JSON.
//   stdin:  one command per line, {"id": <number>, "cmd": "<name>", ...}
//   stdout: exactly one response per command, {"id": <same>, "ok": true, ...} or
//           {"id": <same>, "ok": false, "error": "..."}, interleaved with events
//           {"ev": "<name>", ...} (events never carry an "id").
// Nothing else is ever written to stdout; diagnostics go to stderr.
// See ../README.md for the full command and event reference.

import { Socket, LongPoll, Presence } from "phoenix"
import WebSocket from "ws"
import { createInterface } from "node:readline"
import { resumableChannel, guardSocket } from "../phoenix-resume.js"

const DEBUG = !!process.env.PHXNODE_DEBUG

// ---------------------------------------------------------------------------
// output

function write(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n")
}

function debug(...args) {
  if (DEBUG) console.error("[puppet]", ...args)
}

function fatal(err) {
  const message = err && err.stack ? err.stack : String(err)
  try {
    write({ ev: "fatal", message })
  } catch (_) {
    // ignore
  }
  console.error("[puppet] fatal:", message)
  process.exit(1)
}

process.on("uncaughtException", fatal)
process.on("unhandledRejection", fatal)

function isArrayBuffer(v) {
  return v instanceof ArrayBuffer || (v && v.constructor && v.constructor.name === "ArrayBuffer")
}

function b64(ab) {
  return Buffer.from(new Uint8Array(ab)).toString("base64")
}

function fromB64(s) {
  const buf = Buffer.from(String(s || ""), "base64")
  // copy into a fresh, exactly sized ArrayBuffer: phoenix checks payload.constructor === ArrayBuffer
  const ab = new ArrayBuffer(buf.length)
  new Uint8Array(ab).set(buf)
  return ab
}

// encodeValue returns [jsonValue, isBinary]; ArrayBuffers become base64 strings.
function encodeValue(v) {
  if (isArrayBuffer(v)) return [b64(v), true]
  return [v === undefined ? null : v, false]
}

function errMessage(e) {
  if (e === undefined || e === null) return "unknown error"
  if (typeof e === "string") return e
  if (e.message) return String(e.message)
  if (e.error && e.error.message) return String(e.error.message)
  if (e.type) return String(e.type)
  try {
    return JSON.stringify(e)
  } catch (_) {
    return String(e)
  }
}

// ---------------------------------------------------------------------------
// state

let socket = null
let socketParams = {}
let everOpened = false
// what the latest connect command asked to wait for: {respond, timer, fallback, lastError}
let pendingConnect = null

const channelParams = Object.create(null) // topic -> current join params
const channels = Object.create(null) //      topic -> latest Channel object created by "join"

// mapping a number (or array) option to the function form phoenix expects
function backoff(v) {
  if (v === undefined || v === null) return undefined
  if (typeof v === "number") return () => v
  if (Array.isArray(v)) return (tries) => v[Math.min(Math.max(tries, 1), v.length) - 1]
  throw new Error("backoff option must be a number or an array of numbers")
}

function memoryStorage() {
  return {
    m: Object.create(null),
    getItem(k) {
      return k in this.m ? this.m[k] : null
    },
    setItem(k, v) {
      this.m[k] = String(v)
    },
    removeItem(k) {
      delete this.m[k]
    },
    clear() {
      this.m = Object.create(null)
    },
  }
}
const sessionStorage = memoryStorage()

// ---------------------------------------------------------------------------
// commands

function finishConnect(result) {
  const pc = pendingConnect
  if (!pc) return
  pendingConnect = null
  clearTimeout(pc.timer)
  pc.respond(result)
}

function buildSocket(cmd) {
  const o = cmd.opts || {}
  const pick = (k) => (cmd[k] !== undefined ? cmd[k] : o[k])
  const longpoll = !!pick("longpoll")
  const authToken = pick("authToken")
  socketParams = cmd.params || {}
  // ws offers permessage-deflate by default; perMessageDeflate: false
  // makes a client that does not (compressed and plain clients side by side).
  const wsTransport =
    o.perMessageDeflate === false
      ? class extends WebSocket {
          constructor(url, protocols) {
            super(url, protocols, { perMessageDeflate: false })
          }
        }
      : WebSocket
  const opts = {
    transport: longpoll ? LongPoll : wsTransport,
    params: () => socketParams,
    sessionStorage,
  }
  if (authToken !== undefined && authToken !== null) opts.authToken = authToken
  if (o.heartbeatIntervalMs !== undefined) opts.heartbeatIntervalMs = o.heartbeatIntervalMs
  if (o.timeout !== undefined) opts.timeout = o.timeout
  if (o.longPollFallbackMs !== undefined) opts.longPollFallbackMs = o.longPollFallbackMs
  if (o.longpollerTimeout !== undefined) opts.longpollerTimeout = o.longpollerTimeout
  if (o.vsn !== undefined) opts.vsn = o.vsn
  if (o.reconnectAfterMs !== undefined) opts.reconnectAfterMs = backoff(o.reconnectAfterMs)
  if (o.rejoinAfterMs !== undefined) opts.rejoinAfterMs = backoff(o.rejoinAfterMs)
  if (DEBUG || pick("debug")) {
    opts.logger = (kind, msg, data) => {
      let d = ""
      try {
        d = data === undefined ? "" : JSON.stringify(data, (_k, v) => (isArrayBuffer(v) ? `<${v.byteLength} bytes>` : v))
      } catch (_) {
        d = String(data)
      }
      console.error(`[phoenix] ${kind}: ${msg} ${d}`)
    }
  }

  const s = new Socket(cmd.url, opts)
  s.onOpen(() => {
    everOpened = true
    write({ ev: "open", transport: transportName(s) })
    finishConnect({ ok: true, transport: transportName(s) })
  })
  s.onError((error) => {
    const message = errMessage(error)
    write({ ev: "error", message })
    if (pendingConnect) {
      pendingConnect.lastError = message
      // with longPollFallbackMs the first error makes phoenix fall back, so keep waiting
      if (!pendingConnect.fallback) finishConnect({ ok: false, error: message })
    }
  })
  s.onClose((event) => {
    const e = event || {}
    const out = { ev: "close", code: typeof e.code === "number" ? e.code : 0, reason: e.reason ? String(e.reason) : "" }
    if (e.wasClean !== undefined) out.wasClean = !!e.wasClean
    write(out)
  })
  if (pick("trace")) {
    s.onMessage((msg) => {
      const [payload, binary] = encodeValue(msg.payload)
      const out = { ev: "wire", topic: msg.topic, event: msg.event, payload, ref: msg.ref ?? null, join_ref: msg.join_ref ?? null, binary }
      if (msg.event === "phx_reply" && msg.payload && isArrayBuffer(msg.payload.response)) {
        out.payload = { status: msg.payload.status, response: b64(msg.payload.response) }
        out.binary = true
      }
      write(out)
    })
  }
  return s
}

function transportName(s) {
  return s.transport === LongPoll ? "longpoll" : "websocket"
}

function cmdConnect(cmd, respond) {
  if (pendingConnect) return respond({ ok: false, error: "a connect is already in progress" })
  const o = cmd.opts || {}
  const wait = cmd.wait !== undefined ? cmd.wait !== false : o.wait !== false
  const waitMs = cmd.connectTimeoutMs || o.connectTimeoutMs || 5000
  let fresh = false
  if (!socket) {
    if (!cmd.url) return respond({ ok: false, error: "connect: url is required" })
    socket = buildSocket(cmd)
    fresh = true
  } else if (cmd.params !== undefined) {
    socketParams = cmd.params
  }
  if (!fresh && socket.isConnected()) return respond({ ok: true, transport: transportName(socket), already: true })
  if (wait) {
    pendingConnect = {
      respond,
      fallback: !!socket.longPollFallbackMs,
      lastError: null,
      timer: setTimeout(() => {
        const pc = pendingConnect
        finishConnect({ ok: false, error: pc && pc.lastError ? pc.lastError : `not open after ${waitMs} ms` })
      }, waitMs),
    }
  }
  try {
    socket.connect()
  } catch (e) {
    // e.g. ws throws "An invalid or duplicated subprotocol was specified" synchronously
    if (wait) finishConnect({ ok: false, error: errMessage(e) })
    else respond({ ok: false, error: errMessage(e) })
    return
  }
  if (!wait) respond({ ok: true, transport: transportName(socket) })
}

function needSocket() {
  if (!socket) throw new Error("no socket: send connect first")
}

function needChannel(topic) {
  const ch = channels[topic]
  if (!ch) throw new Error(`no channel for topic ${JSON.stringify(topic)}: send join first`)
  return ch
}

const STD_STATUSES = new Set(["ok", "error", "timeout"])

// Replies for pushes are delivered to the channel as internal "chan_reply_<ref>" events.
// channel.onMessage sees them before the Push does, so a push answered with a status
// other than ok/error/timeout (which would fire no receive hook) still gets a response.
// channel -> Set of {push, onReply}
const replyWatchers = new WeakMap()

function watchReply(ch, push, onReply) {
  let set = replyWatchers.get(ch)
  if (!set) replyWatchers.set(ch, (set = new Set()))
  const w = { push, onReply }
  set.add(w)
  return () => set.delete(w)
}

function cmdJoin(cmd, respond) {
  needSocket()
  const topic = String(cmd.topic)
  channelParams[topic] = cmd.params || {}
  // "resumable": wrap with the offset-tracking helper, as an app would.
  const ch = cmd.resumable
    ? resumableChannel(socket, topic, () => channelParams[topic], {
        onGap: (gap) => write({ ev: "gap", topic, gap }),
      })
    : socket.channel(topic, () => channelParams[topic])
  channels[topic] = ch
  const inner = ch.onMessage.bind(ch)
  let responded = false
  const answer = (status, response) => {
    const [resp, binary] = encodeValue(response)
    write({ ev: "join_reply", topic, status, response: resp, binary })
    if (responded) return
    responded = true
    respond({ ok: true, status, response: resp, binary })
  }

  ch.onMessage = (event, payload, ref, joinRef) => {
    // internal reply routing events (chan_reply_<ref>)
    if (typeof event === "string" && event.startsWith("chan_reply_")) {
      const set = replyWatchers.get(ch)
      if (set) for (const w of [...set]) if (w.push.refEvent === event) w.onReply(payload || {})
      if (event === ch.joinPush.refEvent && payload && !STD_STATUSES.has(payload.status)) {
        // a join reply with a non-standard status: no receive hook fires, channel stays "joining"
        answer(String(payload.status), payload.response)
      }
      return inner(event, payload, ref, joinRef)
    }
    if (event === "phx_reply") return inner(event, payload, ref, joinRef)
    // ref === undefined marks events triggered locally by phoenix.js itself
    // (leave -> phx_close "leave", transport failure -> phx_error {source:"transport"}),
    // which are reported as chan_close / chan_error only.
    if (ref === undefined) return inner(event, payload, ref, joinRef)
    const [p, binary] = encodeValue(payload)
    write({ ev: "msg", topic, event, payload: p, ref: ref ?? null, join_ref: joinRef ?? null, binary })
    return inner(event, payload, ref, joinRef)
  }
  ch.onClose((payload) => {
    write({ ev: "chan_close", topic, payload: encodeValue(payload)[0] })
    if (!responded) {
      responded = true
      respond({ ok: true, status: "closed", response: null })
    }
  })
  ch.onError((payload) => {
    write({ ev: "chan_error", topic, payload: encodeValue(payload)[0] })
  })

  if (cmd.presence) {
    const presence = new Presence(ch)
    presence.onSync(() => {
      write({ ev: "presence_sync", topic, list: presence.list((key, { metas }) => ({ key, metas })) })
    })
  }

  const push = cmd.timeout ? ch.join(cmd.timeout) : ch.join()
  push
    .receive("ok", (resp) => answer("ok", resp))
    .receive("error", (resp) => {
      answer("error", resp)
      // runs after the channel's own error hook (which schedules the rejoin), so leave() wins;
      // answered first because leave() closes the channel synchronously
      if (cmd.leaveOnError) ch.leave()
    })
    .receive("timeout", (resp) => answer("timeout", resp))
}

function cmdPush(cmd, respond) {
  needSocket()
  const ch = needChannel(String(cmd.topic))
  const payload = cmd.binary ? fromB64(cmd.payload) : cmd.payload || {}
  const push = cmd.timeout ? ch.push(String(cmd.event), payload, cmd.timeout) : ch.push(String(cmd.event), payload)
  let done = false
  let unwatch = () => {}
  const answer = (status, response) => {
    if (done) return
    done = true
    unwatch()
    const [resp, binary] = encodeValue(response)
    respond({ ok: true, status, response: resp, binary })
  }
  unwatch = watchReply(ch, push, (r) => {
    if (!STD_STATUSES.has(r.status)) answer(String(r.status), r.response)
  })
  push
    .receive("ok", (r) => answer("ok", r))
    .receive("error", (r) => answer("error", r))
    .receive("timeout", (r) => answer("timeout", r))
}

function cmdLeave(cmd, respond) {
  needSocket()
  const ch = needChannel(String(cmd.topic))
  let done = false
  const answer = (status) => {
    if (done) return
    done = true
    respond({ ok: true, status })
  }
  const push = cmd.timeout ? ch.leave(cmd.timeout) : ch.leave()
  push.receive("ok", () => answer("ok")).receive("timeout", () => answer("timeout"))
}

function cmdPing(cmd, respond) {
  needSocket()
  let done = false
  const timer = setTimeout(() => {
    if (done) return
    done = true
    respond({ ok: false, error: "ping timeout" })
  }, cmd.timeoutMs || 10000)
  const sent = socket.ping((rtt) => {
    if (done) return
    done = true
    clearTimeout(timer)
    respond({ ok: true, rtt })
  })
  if (!sent) {
    done = true
    clearTimeout(timer)
    respond({ ok: false, error: "not connected" })
  }
}

function disconnect(cmd, cb) {
  if (!socket) return cb()
  if (pendingConnect) finishConnect({ ok: false, error: "disconnected" })
  if (cmd && cmd.code) socket.disconnect(cb, cmd.code, cmd.reason || "")
  else socket.disconnect(cb)
}

function cmdState(_cmd, respond) {
  const chans = {}
  if (socket) for (const ch of socket.channels) chans[ch.topic] = ch.state
  // channels created by "join" but already removed from the socket (closed)
  for (const topic of Object.keys(channels)) if (!(topic in chans)) chans[topic] = channels[topic].state
  const positions = {}
  for (const [topic, ch] of Object.entries(channels)) if (ch.fabricPosition) positions[topic] = ch.fabricPosition()
  respond({
    ok: true,
    connected: socket ? socket.isConnected() : false,
    connectionState: socket ? socket.connectionState() : "closed",
    transport: socket ? transportName(socket) : null,
    everOpened,
    channels: chans,
    positions,
    session: { ...sessionStorage.m },
  })
}

const handlers = {
  connect: cmdConnect,
  join: cmdJoin,
  push: cmdPush,
  leave: cmdLeave,
  ping: cmdPing,
  state: cmdState,
  // guard: install phoenix-resume.js's guardSocket; its callbacks become
  // "server_close" {code, reason} and "refused" {status, reason, retryAfter} events.
  guard(_cmd, respond) {
    needSocket()
    guardSocket(socket, {
      onServerClose: ({ code, reason }) => write({ ev: "server_close", code, reason }),
      onRefused: ({ status, reason, retryAfter }) => write({ ev: "refused", status, reason, retryAfter: retryAfter ?? null }),
    })
    respond({ ok: true })
  },
  setParams(cmd, respond) {
    channelParams[String(cmd.topic)] = cmd.params || {}
    respond({ ok: true })
  },
  setSocketParams(cmd, respond) {
    socketParams = cmd.params || {}
    respond({ ok: true })
  },
  disconnect(cmd, respond) {
    disconnect(cmd, () => respond({ ok: true }))
  },
  exit(cmd, respond) {
    let exited = false
    const bye = () => {
      if (exited) return
      exited = true
      respond({ ok: true })
      process.exit(0)
    }
    setTimeout(bye, 1000) // do not let a slow teardown hold the process
    try {
      disconnect(cmd, bye)
    } catch (_) {
      bye()
    }
  },
}

function handleLine(line) {
  line = line.trim()
  if (!line) return
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch (e) {
    write({ ev: "protocol_error", message: `bad JSON on stdin: ${errMessage(e)}` })
    return
  }
  const id = cmd && cmd.id !== undefined ? cmd.id : null
  let responded = false
  const respond = (res) => {
    if (responded) {
      debug("second response suppressed", id, res)
      return
    }
    responded = true
    write({ id, ...res })
  }
  const h = cmd && handlers[cmd.cmd]
  if (!h) return respond({ ok: false, error: `unknown command ${JSON.stringify(cmd && cmd.cmd)}` })
  debug("cmd", line)
  try {
    h(cmd, respond)
  } catch (e) {
    respond({ ok: false, error: errMessage(e) })
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on("line", handleLine)
rl.on("close", () => {
  // the Go side went away: do not linger
  const bye = () => process.exit(0)
  setTimeout(bye, 1000)
  try {
    disconnect(null, bye)
  } catch (_) {
    bye()
  }
})
