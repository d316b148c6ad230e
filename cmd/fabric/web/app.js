// Fabric demo page. Uses our own small client (./fabric.js, the same file as
// clients/js/fabric.js). All text from the network goes through textContent.
import { FabricSocket, Presence, trackOffsets, natsSubject } from "./fabric.js";

const $ = (id) => document.getElementById(id);
const MAX_LOG = 500;
const PRESENCE_EVENTS = new Set(["presence_state", "presence_diff"]);

// WebSocket, falling back to LongPoll (like phoenix.js's longPollFallbackMs)
// when it cannot connect; ?transport=longpoll forces LongPoll.
const forceLongPoll = new URLSearchParams(location.search).get("transport") === "longpoll";
const wsURL = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/socket/websocket`;
const socket = new FabricSocket(wsURL, forceLongPoll ? { transport: "longpoll" } : { longPollFallbackMs: 3000 });

function showTransport() {
  $("transport").textContent = socket.transport;
  $("url").textContent = socket.endpointURL().replace(/\?.*$/, "");
  const link = $("switch-transport");
  link.textContent = socket.transport === "LongPoll" ? "use WebSocket" : "try LongPoll";
  link.href = socket.transport === "LongPoll" ? "?" : "?transport=longpoll";
}
showTransport();
socket.onTransport((t) => {
  showTransport();
  system(`WebSocket unavailable: switched to ${t}`, true);
});
let wasOpen = false;
socket.onState((state) => {
  const badge = $("state");
  badge.textContent = state;
  badge.className = `badge ${state}`;
  // Once per outage, not once per failed reconnect attempt.
  if (state === "closed" && wasOpen && channel) system("disconnected, reconnecting…", true);
  if (state === "open" || state === "closed") wasOpen = state === "open";
});

let channel = null;
let presence = null;
let lastBinary = null; // log entry of the last binary message, waiting for its fabric:offset
let recovering = null; // {head: BigInt, n} while replayed messages arrive after a resume

// --- channel ---------------------------------------------------------------

function join(topic) {
  if (channel) leave();
  const ch = socket.channel(topic, {});
  channel = ch;
  trackOffsets(ch); // every rejoin carries {epoch, offset}: the gateway replays what we missed
  watchPresence(ch);
  ch.onState((s) => {
    if (ch !== channel) return;
    setChanState(s);
  });
  ch.onJoin((status, response, { rejoin }) => {
    if (ch !== channel) return;
    if (status === "ok") {
      system(rejoin ? `rejoined ${topic}` : `joined ${topic}`, false, response);
      showRecovery(response);
    } else {
      system(`join ${topic} refused: ${reason(response)}`, true, response);
      if (channel === ch) channel = null;
      setChanState("closed");
    }
  });
  ch.onAny((event, payload, meta) => {
    if (ch !== channel || PRESENCE_EVENTS.has(event)) return; // presence has its own list
    if (event === "fabric:offset") {
      // The offset of the binary broadcast just before it (WebSocket).
      if (lastBinary && meta.offset != null) {
        setOffset(lastBinary, meta.offset);
        countRecovered(meta.offset, lastBinary);
      }
      lastBinary = null;
      return;
    }
    const li = message(event, payload, meta);
    // A binary frame has no ref slot: its offset follows in fabric:offset.
    // (Over LongPoll binary arrives as base64 JSON, offset included.)
    lastBinary = meta.binary && meta.offset == null ? li : null;
    if (meta.offset != null) countRecovered(meta.offset, li);
  });
  ch.join().catch(() => {}); // reported by onJoin; a timeout keeps retrying
  setChanState("joining");
}

function leave() {
  const ch = channel;
  channel = null;
  lastBinary = null;
  recovering = null;
  presence?.dispose();
  presence = null;
  renderPresence(null);
  $("recovered").hidden = true;
  if (!ch) return;
  ch.leave();
  system(`left ${ch.topic}`);
  setChanState("closed");
}

function setChanState(s) {
  const chip = $("chan-state");
  chip.textContent = s === "closed" ? "not joined" : s;
  chip.className = `chip ${s}`;
  $("leave").disabled = s === "closed";
  $("push").disabled = s === "closed";
}

// A resumed join says whether the gateway could replay what we missed
// (docs/history.md). Replayed messages are those up to the reply's offset.
function showRecovery(response) {
  const box = $("recovered");
  if (!response || typeof response !== "object" || response.recovered === undefined) return;
  box.hidden = false;
  if (response.recovered === true) {
    box.className = "notice";
    recovering = { head: toBig(response.offset), n: 0 };
    box.textContent = "Reconnected: recovered 0 messages.";
  } else {
    recovering = null;
    box.className = "notice warn";
    box.textContent = `Reconnected, but missed messages could not be recovered (${reason(response)}).`;
  }
}

// Messages up to the head offset of the join reply are the replay.
function countRecovered(offset, li) {
  if (!recovering || offset == null) return;
  const o = toBig(offset);
  if (o === null || recovering.head === null || o > recovering.head) {
    recovering = null; // live again
    return;
  }
  recovering.n += 1;
  $("recovered").textContent = `Reconnected: recovered ${recovering.n} message${recovering.n === 1 ? "" : "s"}.`;
  li?.querySelector(".head")?.append(el("span", "tag recovered", "recovered"));
}

// --- presence ------------------------------------------------------------------

// Presence state from presence_state / presence_diff, merged like phoenix.js
// (the Presence class in fabric.js); shown only when the topic tracks presence.
function watchPresence(ch) {
  presence?.dispose();
  const p = new Presence(ch);
  presence = p;
  renderPresence(null);
  p.onSync(() => { if (p === presence) renderPresence(p); });
}

function renderPresence(p) {
  const box = $("presence");
  if (!p) {
    box.hidden = true;
    $("online").replaceChildren();
    return;
  }
  const entries = p.list((key, { metas }) => [key, metas.length]).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const items = entries.map(([key, n]) => {
    const li = el("li", "", key);
    li.title = `${key}: ${n} presence${n === 1 ? "" : "s"}`;
    if (n > 1) li.append(el("span", "metas", `×${n}`));
    return li;
  });
  $("online").replaceChildren(...items);
  $("online-count").textContent = `${entries.length}`;
  box.hidden = false;
}

function toBig(v) {
  try { return v == null ? null : BigInt(String(v)); } catch { return null; }
}

function reason(response) {
  if (response && typeof response === "object" && "reason" in response) return String(response.reason);
  return "no reason given";
}

// --- log ---------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function stamp() {
  const d = new Date();
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function entry(cls, event, body) {
  const li = el("li", cls);
  li.append(el("span", "time", stamp()));
  const head = el("span", "head");
  head.append(el("span", "event", event));
  li.append(head);
  if (body !== undefined) li.append(el("pre", "", body));
  const log = $("log");
  log.prepend(li);
  while (log.children.length > MAX_LOG) log.lastElementChild.remove();
  $("empty").hidden = true;
  $("count").textContent = `${log.querySelectorAll("li:not(.system)").length}`;
  return li;
}

function message(event, payload, { offset, binary }) {
  const li = entry("msg", event, binary ? hexdump(payload) : pretty(payload));
  const head = li.querySelector(".head");
  if (binary) head.append(el("span", "tag binary", `binary, ${payload.byteLength} bytes`));
  if (offset != null) setOffset(li, offset);
  return li;
}

function setOffset(li, offset) {
  const head = li.querySelector(".head");
  head.querySelector(".offset")?.remove();
  head.append(el("span", "offset", `offset ${offset}`));
}

function system(text, bad = false, response) {
  const body = response && typeof response === "object" && Object.keys(response).length ? pretty(response) : undefined;
  entry(bad ? "system bad" : "system", text, body);
}

function pretty(v) {
  if (v instanceof ArrayBuffer) return hexdump(v);
  try { return JSON.stringify(v, null, 2) ?? String(v); } catch { return String(v); }
}

function hexdump(buf) {
  const bytes = new Uint8Array(buf);
  const shown = bytes.subarray(0, 512);
  const lines = [];
  for (let i = 0; i < shown.length; i += 16) {
    lines.push(Array.from(shown.subarray(i, i + 16), (b) => b.toString(16).padStart(2, "0")).join(" "));
  }
  if (bytes.length > shown.length) lines.push(`… ${bytes.length - shown.length} more bytes`);
  return lines.join("\n") || "(empty)";
}

// --- publish helper box -----------------------------------------------------------

function shellWord(s) {
  return /^[A-Za-z0-9_:.=\/@,+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

const SAMPLE = '{"body":"hi"}';

function updateHelper() {
  const topic = $("topic").value.trim() || "room:lobby";
  const event = $("event").value.trim() || "new_msg";
  const subject = natsSubject(topic);
  $("nats-subject").textContent = subject;
  setCommand($("fabric-cmd"), ["fabric publish", `--event ${shellWord(event)}`, shellWord(topic), shellWord(SAMPLE)]);
  setCommand($("nats-cmd"), ["nats pub", subject, shellWord(SAMPLE), `-H ${shellWord(`Fabric-Event:${event}`)}`]);
  // "data" takes the JSON value as it is; base64 in "payload" is for bytes.
  const body = JSON.stringify({ topic, event, data: JSON.parse(SAMPLE) });
  setCommand($("curl-cmd"), ["curl -s", "-H 'Content-Type: application/json'", `-d ${shellWord(body)}`,
    `${location.protocol}//${location.host}/api/v1/publish`]);
}

// setCommand shows a shell command wrapping only between its parts (not
// inside "-H Fabric-Event:…"); its textContent is the command to copy.
function setCommand(code, parts) {
  code.replaceChildren();
  parts.forEach((part, i) => {
    if (i) code.append(" ");
    code.append(el("span", part.length <= 48 ? "nowrap" : "", part));
  });
}

for (const btn of document.querySelectorAll("button[data-copy]")) {
  btn.addEventListener("click", async () => {
    const code = $(btn.dataset.copy);
    try {
      await navigator.clipboard.writeText(code.textContent);
      btn.textContent = "Copied";
    } catch {
      const range = document.createRange(); // no clipboard API: select it instead
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      btn.textContent = "Press Ctrl+C";
    }
    setTimeout(() => { btn.textContent = "Copy"; }, 1500);
  });
}

// --- forms -----------------------------------------------------------------------

$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const topic = $("topic").value.trim();
  if (topic) join(topic);
});
$("leave").addEventListener("click", leave);
$("topic").addEventListener("input", updateHelper);
$("event").addEventListener("input", updateHelper);
$("clear").addEventListener("click", () => {
  $("log").replaceChildren();
  $("count").textContent = "0";
  $("empty").hidden = false;
  lastBinary = null;
});

$("push-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const result = $("push-result");
  const area = $("payload");
  let payload;
  try {
    payload = JSON.parse(area.value);
    area.classList.remove("invalid");
  } catch (err) {
    area.classList.add("invalid");
    result.className = "hint bad";
    result.textContent = `Payload is not valid JSON: ${err.message}`;
    return;
  }
  if (!channel) return;
  const event = $("event").value.trim();
  result.className = "hint";
  result.textContent = "sending…";
  try {
    const response = await channel.push(event, payload);
    const offset = response && typeof response === "object" && response.offset != null ? ` (offset ${response.offset})` : "";
    result.className = "hint ok";
    result.textContent = `ok${offset}`;
  } catch (err) {
    result.className = "hint bad";
    result.textContent = `error: ${reason(err)}`;
  }
});

updateHelper();
socket.connect();
join($("topic").value.trim());
