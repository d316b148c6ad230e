// community.mjs: drives a community Phoenix client from npm, unmodified, for the
// conformance suite (test/conformance), speaking the same stdin/stdout protocol as
// puppet.mjs so internal/testkit/phxnode drives both:
//
//   node test/community.mjs phoenix-channels   (npm "phoenix-channels" 1.0.0)
//   node test/community.mjs phoenix-socket     (npm "phoenix-socket" 1.2.3)
//
// Both are the Phoenix 1.2 socket.js, repackaged: protocol v1 (JSON objects, no
// join_ref, no binary frames), WebSocket only in Node (phoenix-socket's LongPoll needs a
// browser's XMLHttpRequest), Presence as the static syncState/syncDiff API.
//
// Commands: connect, join, push, leave, ping, state, disconnect, exit (see puppet.mjs).
// "ping" has no socket.ping() to call in these clients: it waits for the reply to the
// next heartbeat the client's own timer sends (connect with a short
// heartbeatIntervalMs). Events: msg, join_reply, chan_close, chan_error, presence_sync,
// open, close, error, heartbeat_reply, fatal.

import { createRequire } from "node:module"
import { createInterface } from "node:readline"
import WebSocket from "ws"

const require = createRequire(import.meta.url)
const LIB = process.argv[2]
if (LIB !== "phoenix-channels" && LIB !== "phoenix-socket") {
  console.error(`usage: node community.mjs phoenix-channels|phoenix-socket (got ${JSON.stringify(LIB)})`)
  process.exit(2)
}
const { Socket, Presence } = require(LIB)

function write(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n")
}

function fatal(err) {
  const message = err && err.stack ? err.stack : String(err)
  try {
    write({ ev: "fatal", message })
  } catch (_) {
    // ignore
  }
  console.error("[community] fatal:", message)
  process.exit(1)
}

process.on("uncaughtException", fatal)
process.on("unhandledRejection", fatal)

function errMessage(e) {
  if (e === undefined || e === null) return "unknown error"
  if (typeof e === "string") return e
  if (e.message) return String(e.message)
  if (e.type) return String(e.type)
  return String(e)
}

let socket = null
const channels = {} // topic -> latest Channel created by "join"
let heartbeatWaiters = []

function cmdConnect(cmd, respond) {
  if (socket) return respond({ ok: false, error: "already connected" })
  const o = cmd.opts || {}
  const opts = {
    params: cmd.params || {},
    timeout: o.timeout || 10000,
    heartbeatIntervalMs: o.heartbeatIntervalMs || 30000,
    reconnectAfterMs: () => 200,
  }
  // phoenix-channels brings its own WebSocket (npm "websocket"); phoenix-socket looks
  // for window.WebSocket, which Node has not: give it the "ws" package, as an app would.
  if (LIB === "phoenix-socket") opts.transport = WebSocket
  if (cmd.debug) {
    opts.logger = (kind, msg, data) => {
      let d = ""
      try {
        d = data === undefined ? "" : JSON.stringify(data)
      } catch (_) {
        d = String(data) // e.g. phoenix-socket logs the transport's prototype
      }
      console.error(`[${LIB}] ${kind}: ${msg} ${d}`)
    }
  }
  socket = new Socket(cmd.url, opts)
  let answered = false
  const timer = setTimeout(() => {
    if (answered) return
    answered = true
    respond({ ok: false, error: "not open after 5000 ms" })
  }, 5000)
  socket.onOpen(() => {
    write({ ev: "open", transport: "websocket" })
    if (answered) return
    answered = true
    clearTimeout(timer)
    respond({ ok: true, transport: "websocket" })
  })
  socket.onError((e) => write({ ev: "error", message: errMessage(e) }))
  socket.onClose((e) => write({ ev: "close", code: e && typeof e.code === "number" ? e.code : 0, reason: e && e.reason ? String(e.reason) : "" }))
  socket.onMessage((msg) => {
    if (msg.topic !== "phoenix" || msg.event !== "phx_reply") return
    write({ ev: "heartbeat_reply", ref: msg.ref ?? null, payload: msg.payload })
    const ws = heartbeatWaiters
    heartbeatWaiters = []
    for (const w of ws) w(msg.payload)
  })
  socket.connect()
}

function cmdJoin(cmd, respond) {
  if (!socket) throw new Error("no socket: send connect first")
  const topic = String(cmd.topic)
  const ch = socket.channel(topic, cmd.params || {})
  channels[topic] = ch
  const inner = ch.onMessage.bind(ch)
  ch.onMessage = (event, payload, ref) => {
    // replies are routed through chan_reply_<ref> events; local triggers (a leave's
    // phx_close "leave", a transport phx_error) are reported as chan_close/chan_error
    const local = payload === "leave" || payload === undefined
    // event can be null: these clients fire a push's timeout on refEvent,
    // which a resend after a reconnect may have cleared
    if (typeof event === "string" && !event.startsWith("chan_reply_") && event !== "phx_reply" && !local) {
      write({ ev: "msg", topic, event, payload: payload ?? null, ref: ref ?? null, binary: false })
    }
    return inner(event, payload, ref)
  }
  ch.onClose((payload) => write({ ev: "chan_close", topic, payload: payload ?? null }))
  ch.onError((payload) => write({ ev: "chan_error", topic, payload: payload ?? null }))
  if (cmd.presence) {
    let state = {}
    const sync = () => write({ ev: "presence_sync", topic, list: Presence.list(state, (key, { metas }) => ({ key, metas })) })
    ch.on("presence_state", (s) => {
      state = Presence.syncState(state, s)
      sync()
    })
    ch.on("presence_diff", (d) => {
      state = Presence.syncDiff(state, d)
      sync()
    })
  }
  let done = false
  const answer = (status, response) => {
    write({ ev: "join_reply", topic, status, response: response ?? null, binary: false })
    if (done) return
    done = true
    respond({ ok: true, status, response: response ?? null, binary: false })
  }
  ch.join()
    .receive("ok", (r) => answer("ok", r))
    .receive("error", (r) => {
      answer("error", r)
      if (cmd.leaveOnError) ch.leave()
    })
    .receive("timeout", (r) => answer("timeout", r))
}

function cmdPush(cmd, respond) {
  const ch = channels[String(cmd.topic)]
  if (!ch) throw new Error(`no channel for ${cmd.topic}`)
  if (cmd.binary) return respond({ ok: false, error: `${LIB} has no binary pushes` })
  let done = false
  const answer = (status, response) => {
    if (done) return
    done = true
    respond({ ok: true, status, response: response ?? null, binary: false })
  }
  ch.push(String(cmd.event), cmd.payload || {})
    .receive("ok", (r) => answer("ok", r))
    .receive("error", (r) => answer("error", r))
    .receive("timeout", (r) => answer("timeout", r))
}

function cmdLeave(cmd, respond) {
  const ch = channels[String(cmd.topic)]
  if (!ch) throw new Error(`no channel for ${cmd.topic}`)
  let done = false
  const answer = (status) => {
    if (done) return
    done = true
    respond({ ok: true, status })
  }
  ch.leave()
    .receive("ok", () => answer("ok"))
    .receive("timeout", () => answer("timeout"))
}

function cmdPing(cmd, respond) {
  if (!socket) throw new Error("no socket: send connect first")
  const started = Date.now()
  let done = false
  const timer = setTimeout(() => {
    if (done) return
    done = true
    respond({ ok: false, error: "no heartbeat reply" })
  }, cmd.timeoutMs || 10000)
  heartbeatWaiters.push((payload) => {
    if (done) return
    done = true
    clearTimeout(timer)
    if (payload && payload.status === "ok") respond({ ok: true, rtt: Date.now() - started })
    else respond({ ok: false, error: `heartbeat reply ${JSON.stringify(payload)}` })
  })
}

function cmdState(_cmd, respond) {
  const chans = {}
  for (const [topic, ch] of Object.entries(channels)) chans[topic] = ch.state
  respond({
    ok: true,
    connected: socket ? socket.isConnected() : false,
    connectionState: socket ? socket.connectionState() : "closed",
    transport: "websocket",
    channels: chans,
  })
}

function disconnect(cb) {
  if (!socket) return cb()
  socket.disconnect(cb)
}

const handlers = {
  connect: cmdConnect,
  join: cmdJoin,
  push: cmdPush,
  leave: cmdLeave,
  ping: cmdPing,
  state: cmdState,
  disconnect(_cmd, respond) {
    disconnect(() => respond({ ok: true }))
  },
  exit(_cmd, respond) {
    const bye = () => {
      respond({ ok: true })
      process.exit(0)
    }
    setTimeout(bye, 1000)
    try {
      disconnect(bye)
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
    if (responded) return
    responded = true
    write({ id, ...res })
  }
  const h = handlers[cmd && cmd.cmd]
  if (!h) return respond({ ok: false, error: `unknown command ${JSON.stringify(cmd && cmd.cmd)}` })
  try {
    h(cmd, respond)
  } catch (e) {
    respond({ ok: false, error: errMessage(e) })
  }
}

const rl = createInterface({ input: process.stdin, crlfDelay: Infinity })
rl.on("line", handleLine)
rl.on("close", () => {
  setTimeout(() => process.exit(0), 1000)
  try {
    disconnect(() => process.exit(0))
  } catch (_) {
    process.exit(0)
  }
})
