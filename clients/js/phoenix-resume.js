// phoenix-resume.js — resume Fabric channels with the official phoenix.js
// client. ES module, no dependencies.
//
//   import { Socket } from "phoenix"
//   import { resumableChannel } from "./phoenix-resume.js"
//
//   const socket = new Socket("wss://example.com/socket", { params: { token } })
//   socket.connect()
//   const channel = resumableChannel(socket, "room:lobby", {}, {
//     onGap: ({ reason }) => reloadRoomState(reason),   // history could not be replayed
//   })
//   channel.on("new_msg", (msg, offset) => render(msg))
//   channel.join()
//
// What it does: Fabric puts each message's stream offset in the frame's ref
// slot (binary messages are followed by a "fabric:offset" frame) and answers
// joins with {epoch, offset}; offsets are decimal strings everywhere the
// server sends one (a stream sequence is a uint64: a JS number would round
// it past 2^53), and the helper keeps and sends them as strings. The helper remembers the epoch and the latest
// offset, and phoenix.js — which re-evaluates channel params on every rejoin
// — sends them back as {epoch, offset}, so after any reconnect the gateway
// replays exactly what was missed. If it cannot, the join reply says
// recovered: false and the helper calls onGap with the reason —
// "history_gone" (retention dropped messages after the offset),
// "history_cleared" (a moderator cleared the channel), "epoch_changed"
// (the stream was recreated or restored) or "offset_ahead"; the channel
// then continues live from the current position. A connected client is
// made to rejoin when its channel is cleared or its stream replaced, so
// it hears about it at once.

const CONTROL = /^(phx_|chan_reply_)/
const DIGITS = /^[0-9]+$/

/**
 * @param {import("phoenix").Socket} socket
 * @param {string} topic
 * @param {object|function} params  the app's own join params (object or function)
 * @param {{onGap?: function, onPosition?: function, position?: {epoch: string, offset: string|number}}} options
 *   position seeds the helper (e.g. restored from sessionStorage after a reload);
 *   onPosition is called whenever the position moves (to persist it).
 */
export function resumableChannel(socket, topic, params = {}, options = {}) {
  let epoch = options.position?.epoch
  let offset = options.position?.offset != null ? String(options.position.offset) : undefined
  const appParams = typeof params === "function" ? params : () => params
  const moved = () => options.onPosition?.({ epoch, offset })

  const channel = socket.channel(topic, () => {
    const p = { ...appParams() }
    if (epoch !== undefined && offset !== undefined) {
      p.epoch = epoch
      p.offset = offset
    }
    return p
  })

  // Every app event passes through onMessage; the offset rides in the ref
  // slot of broadcasts (never of replies, which carry the push's ref).
  const inner = channel.onMessage.bind(channel)
  channel.onMessage = (event, payload, ref, joinRef) => {
    if (typeof ref === "string" && DIGITS.test(ref) && !CONTROL.test(event)) {
      offset = ref
      moved()
    }
    return inner(event, payload, ref, joinRef)
  }

  // receive hooks on the join push fire on every (re)join reply.
  channel.joinPush.receive("ok", (resp) => {
    if (!resp || resp.epoch === undefined) return // ephemeral namespace: nothing to track
    if (resp.recovered === true) {
      epoch = resp.epoch // the missed messages follow and move the offset
      return
    }
    const lost = resp.recovered === false ? { reason: resp.reason, epoch, offset } : null
    epoch = resp.epoch
    offset = String(resp.offset)
    moved()
    if (lost) options.onGap?.({ ...lost, position: { epoch, offset } })
  })

  channel.fabricPosition = () => ({ epoch, offset })
  return channel
}

// Close codes of Fabric's cluster control (docs/cluster-control.md): a
// backend disconnected the user, banned it, or revoked its token.
export const CLOSE_DISCONNECTED = 4010
export const CLOSE_BANNED = 4011
export const CLOSE_REVOKED = 4012

/**
 * guardSocket tells the app why Fabric closed or refused its socket.
 * phoenix.js reconnects after every close and shows the app nothing of a
 * refused upgrade (a browser never sees the HTTP status of a WebSocket
 * handshake), so a banned user or a revoked token would just look like a
 * flaky network.
 *
 *   guardSocket(socket, {
 *     onServerClose: ({ code, reason }) => …,         // every close with a 4000–4999 code
 *     onRefused: ({ status, reason, retryAfter }) => …, // e.g. 403 "banned" (retryAfter s), 401 "token_revoked"
 *   })
 *
 * onRefused: after a failed connection attempt the helper asks the gateway
 * why, with a plain GET of the same socket URL (params included; the
 * authToken as the X-Phoenix-AuthToken header, as phoenix.js's LongPoll
 * sends it). The gateway runs the same admission as for the upgrade and
 * answers a refusal with its status and {"reason": …} — a GET that passes
 * admission changes nothing (it is not an upgrade) and is not reported.
 * One probe at a time; phoenix.js keeps its own backoff. To stop trying
 * (a ban, a revoked token), call socket.disconnect() from the callback and
 * connect again later or with a new token.
 *
 * @param {import("phoenix").Socket} socket
 * @param {{onServerClose?: function, onRefused?: function, fetch?: function}} options
 */
export function guardSocket(socket, options = {}) {
  const doFetch = options.fetch || globalThis.fetch
  let probing = false
  socket.onClose((e) => {
    const code = e && typeof e.code === "number" ? e.code : 0
    if (code >= 4000 && code < 5000) options.onServerClose?.({ code, reason: (e && e.reason) || "" })
  })
  socket.onError(() => {
    if (probing || !options.onRefused || !doFetch || socket.isConnected()) return
    probing = true
    probeRefusal(socket, doFetch)
      .then((r) => r && options.onRefused(r))
      .catch(() => {}) // the network itself is down: nothing to tell
      .finally(() => {
        probing = false
      })
  })
}

// Admission refusals are 401, 403, 429 and 503 (docs/cluster-control.md);
// anything else means the gateway would have admitted the upgrade.
const REFUSALS = new Set([401, 403, 429, 503])

async function probeRefusal(socket, doFetch) {
  const url = socket.endPointURL().replace(/^ws(s?):/, "http$1:")
  const headers = {}
  if (socket.authToken) headers["X-Phoenix-AuthToken"] = socket.authToken
  const res = await doFetch(url, { headers, cache: "no-store" })
  if (!REFUSALS.has(res.status)) return null
  let reason = ""
  try {
    reason = (await res.json()).reason || ""
  } catch (_) {
    // not a gateway's JSON refusal (a proxy's page): the status says enough
  }
  const ra = Number(res.headers.get("Retry-After"))
  return { status: res.status, reason, retryAfter: Number.isFinite(ra) && ra > 0 ? ra : undefined }
}
