// Test page for Fabric's browser tests (test/browser): the official phoenix
// client (npm "phoenix", its ES module build) plus ../../phoenix-resume.js,
// configured by the query string:
//
//   topic=room:x       channel to join (default room:lobby)
//   token=JWT          passed as the Socket's authToken (Sec-WebSocket-Protocol /
//                      X-Phoenix-AuthToken)
//   fallback=MS        longPollFallbackMs
//   resume=1           join through resumableChannel (epoch/offset on rejoin)
//
// Everything observed goes to window.fabricLog (read by the test with
// page.evaluate) and to window.fabricReport (a playwright binding, streamed
// to the test's log). Binary payloads are reported as base64.

import { Socket, LongPoll } from "./phoenix.mjs"
import { resumableChannel } from "./phoenix-resume.js"

const q = new URLSearchParams(location.search)
const topic = q.get("topic") || "room:lobby"
const log = []
window.fabricLog = log

function b64(ab) {
  let s = ""
  for (const b of new Uint8Array(ab)) s += String.fromCharCode(b)
  return btoa(s)
}

function record(entry) {
  entry.t = Math.round(performance.now())
  log.push(entry)
  const line = document.createElement("div")
  line.textContent = JSON.stringify(entry)
  document.getElementById("log").append(line)
  try {
    window.fabricReport?.(entry)
  } catch (_) {
    // no binding (page opened by hand)
  }
}

const transportName = () => (socket.transport === LongPoll ? "LongPoll" : "WebSocket")
const showState = (s) => {
  document.getElementById("state").textContent = s
  document.getElementById("transport").textContent = transportName()
}

const opts = {
  heartbeatIntervalMs: 1000,
  reconnectAfterMs: () => 200,
  rejoinAfterMs: () => 200,
  timeout: 5000,
}
if (q.get("token")) opts.authToken = q.get("token")
if (q.get("fallback")) opts.longPollFallbackMs = Number(q.get("fallback"))

const wsScheme = location.protocol === "https:" ? "wss" : "ws"
const socket = new Socket(`${wsScheme}://${location.host}/socket`, opts)
socket.onOpen(() => {
  showState("open")
  record({ ev: "open", transport: transportName() })
})
socket.onClose((e) => {
  showState("closed")
  record({ ev: "close", code: e?.code ?? null, transport: transportName() })
})
socket.onError((e) => {
  showState("error")
  record({ ev: "error", transport: transportName(), reason: String(e?.type ?? e ?? "") })
})

const channel = q.get("resume")
  ? resumableChannel(socket, topic, {}, { onGap: (g) => record({ ev: "gap", gap: g }) })
  : socket.channel(topic, {})

// Every application message (and fabric:offset) with its ref slot, which is
// where Fabric puts the stream offset of a broadcast.
const inner = channel.onMessage.bind(channel)
channel.onMessage = (event, payload, ref, joinRef) => {
  if (!/^(phx_|chan_reply_)/.test(event)) {
    const binary = payload instanceof ArrayBuffer
    record({ ev: "msg", event, ref: ref ?? null, binary, payload: binary ? b64(payload) : payload })
  }
  return inner(event, payload, ref, joinRef)
}

// The join push's hooks fire on every (re)join reply.
channel
  .join()
  .receive("ok", (resp) => record({ ev: "join", status: "ok", resp }))
  .receive("error", (resp) => record({ ev: "join", status: "error", resp }))
  .receive("timeout", () => record({ ev: "join", status: "timeout" }))

document.getElementById("topic").textContent = topic
window.fabric = { socket, channel, LongPoll, transportName }
socket.connect()
showState("connecting")
