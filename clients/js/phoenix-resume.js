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
