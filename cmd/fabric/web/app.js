// Fabric demo page. Uses our own small client (./fabric.js, the same file as
// clients/js/fabric.js). All text from the network goes through textContent.
import { FabricSocket, trackOffsets, natsSubject } from "./fabric.js";

const $ = (id) => document.getElementById(id);
const MAX_LOG = 500;

const wsURL = `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/socket/websocket`;
$("url").textContent = wsURL;

const socket = new FabricSocket(wsURL);
$("transport").textContent = socket.transport;
socket.onState((state) => {
  const badge = $("state");
  badge.textContent = state;
  badge.className = `badge ${state}`;
  if (state === "closed" && channel) system("disconnected, reconnecting…", true);
});

let channel = null;
let lastBinary = null; // log entry of the last binary message, waiting for its fabric:offset
let recovering = null; // {head: BigInt, n} while replayed messages arrive after a resume

// --- channel ---------------------------------------------------------------

function join(topic) {
  if (channel) leave();
  const ch = socket.channel(topic, {});
  channel = ch;
  trackOffsets(ch);
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
    if (ch !== channel) return;
    if (event === "fabric:offset") {
      // The offset of the binary broadcast just before it.
      if (lastBinary && meta.offset != null) setOffset(lastBinary, meta.offset);
      lastBinary = null;
      countRecovered(meta.offset);
      return;
    }
    const li = message(event, payload, meta);
    lastBinary = meta.binary ? li : null;
    if (!meta.binary) countRecovered(meta.offset);
  });
  ch.join().catch(() => {}); // reported by onJoin; a timeout keeps retrying
  setChanState("joining");
}

function leave() {
  const ch = channel;
  channel = null;
  lastBinary = null;
  recovering = null;
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
// (design §3.4). Replayed messages are those up to the reply's offset.
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

function countRecovered(offset) {
  if (!recovering || offset == null) return;
  const o = toBig(offset);
  if (o === null || recovering.head === null || o > recovering.head) {
    recovering = null; // live again
    return;
  }
  recovering.n += 1;
  $("recovered").textContent = `Reconnected: recovered ${recovering.n} message${recovering.n === 1 ? "" : "s"}.`;
  const tag = el("span", "tag recovered", "recovered");
  $("log").firstElementChild?.querySelector(".head")?.append(tag);
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

// --- NATS helper box -----------------------------------------------------------

function shellWord(s) {
  return /^[A-Za-z0-9_:.=\/-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

function updateHelper() {
  const topic = $("topic").value.trim() || "room:lobby";
  const event = $("event").value.trim() || "new_msg";
  const subject = natsSubject(topic);
  $("nats-subject").textContent = subject;
  $("nats-cmd").textContent = `nats pub ${subject} '{"body":"hi"}' -H ${shellWord(`Fabric-Event:${event}`)}`;
}

$("copy").addEventListener("click", async () => {
  const text = $("nats-cmd").textContent;
  const btn = $("copy");
  try {
    await navigator.clipboard.writeText(text);
    btn.textContent = "Copied";
  } catch {
    const range = document.createRange(); // no clipboard API: select it instead
    range.selectNodeContents($("nats-cmd"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    btn.textContent = "Press Ctrl+C";
  }
  setTimeout(() => { btn.textContent = "Copy"; }, 1500);
});

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
