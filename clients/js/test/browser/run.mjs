// run.mjs: drives a real Chromium (Debian's /usr/bin/chromium) through
// playwright-core for Fabric's Go browser tests (package test/browser).
// It never downloads a browser.
//
//   node run.mjs            (commands on stdin)
//
// Protocol: newline-delimited JSON, like ../puppet.mjs.
//   stdin:  one command per line, {"id": <number>, "cmd": "<name>", ...}
//   stdout: exactly one response per command, {"id": <same>, "ok": true, "value": ...}
//           or {"id": <same>, "ok": false, "error": "..."}, interleaved with events
//           {"ev": "<name>", ...} (events never carry an "id").
// Nothing else is written to stdout; diagnostics go to stderr.
//
// Commands:
//   open   {url, width?, height?}   new page (one at a time; replaces the previous),
//                                   navigates and waits for "load"
//   eval   {expr}                   page.evaluate(expr): value of a JS expression
//                                   (awaited if it is a promise), JSON-serialisable
//   wait   {expr, timeout?}         polls until the expression is truthy (ms, default 10000)
//   click  {selector}
//   fill   {selector, value}
//   shot   {path, fullPage?}        PNG screenshot of the viewport
//   exit                           closes the browser and exits 0
//
// Events:
//   page     {data}                 the page called window.fabricReport(data)
//   console  {type, text}          console messages of the page
//   pageerror {message}            uncaught exception in the page
//   requestfailed {url, failure}
//   response {url, status}         only for responses with status >= 400
//   fatal    {message}             the driver itself failed; it exits 1
//
// Environment: FABRIC_CHROMIUM overrides the browser binary (default /usr/bin/chromium).

import { createInterface } from "node:readline"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const executablePath = process.env.FABRIC_CHROMIUM || "/usr/bin/chromium"

function write(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n")
}

let profile = null
let context = null
let page = null

async function cleanup() {
  try {
    if (context) await context.close()
  } catch (_) {
    // the browser may already be gone
  }
  context = null
  if (profile) rmSync(profile, { recursive: true, force: true })
  profile = null
}

function fatal(err) {
  const message = err && err.stack ? err.stack : String(err)
  try {
    write({ ev: "fatal", message })
  } catch (_) {
    // ignore
  }
  console.error("[browser] fatal:", message)
  cleanup().finally(() => process.exit(1))
}

process.on("uncaughtException", fatal)
process.on("unhandledRejection", fatal)

let chromium
try {
  ;({ chromium } = await import("playwright-core"))
} catch (e) {
  fatal(new Error(`playwright-core is not installed (npm ci --prefix clients/js): ${e.message}`))
}

async function launch(width, height) {
  // A fresh, empty profile per run. launchPersistentContext is how
  // playwright takes an explicit --user-data-dir.
  profile = mkdtempSync(join(tmpdir(), "fabric-chromium-"))
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width, height },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  })
  // One binding for every page of the context: the page reports to the test.
  await context.exposeBinding("fabricReport", (_source, data) => {
    write({ ev: "page", data })
  })
}

function watch(p) {
  p.on("console", (m) => write({ ev: "console", type: m.type(), text: m.text() }))
  p.on("pageerror", (e) => write({ ev: "pageerror", message: e && e.stack ? e.stack : String(e) }))
  p.on("requestfailed", (r) => write({ ev: "requestfailed", url: r.url(), failure: r.failure()?.errorText ?? "" }))
  p.on("response", (r) => {
    if (r.status() >= 400) write({ ev: "response", url: r.url(), status: r.status() })
  })
}

const commands = {
  async open({ url, width = 1280, height = 800 }) {
    if (!context) await launch(width, height)
    if (page) await page.close()
    page = await context.newPage()
    await page.setViewportSize({ width, height })
    watch(page)
    await page.goto(url, { waitUntil: "load" })
    return page.url()
  },
  async eval({ expr }) {
    return await needPage().evaluate(expr)
  },
  async wait({ expr, timeout = 10000 }) {
    // Polls with page.evaluate rather than page.waitForFunction: the latter
    // evaluates a string through eval() inside the page, which a page's own
    // Content-Security-Policy (the demo page has one) forbids, and the test
    // must not switch that policy off.
    const p = needPage()
    const deadline = Date.now() + timeout
    let last
    for (;;) {
      try {
        if (await p.evaluate(expr)) return true
        last = undefined
      } catch (e) {
        last = e // e.g. a navigation in progress; retried until the deadline
      }
      if (Date.now() > deadline) {
        throw new Error(`timed out after ${timeout} ms` + (last ? ` (last error: ${last.message})` : ""))
      }
      await new Promise((r) => setTimeout(r, 50))
    }
  },
  async click({ selector }) {
    await needPage().click(selector)
    return true
  },
  async fill({ selector, value }) {
    await needPage().fill(selector, value)
    return true
  },
  async shot({ path, fullPage = false }) {
    await needPage().screenshot({ path, fullPage })
    return path
  },
  async exit() {
    await cleanup()
    setImmediate(() => process.exit(0))
    return true
  },
}

function needPage() {
  if (!page) throw new Error("no page: send open first")
  return page
}

// Commands run one after another, in arrival order.
let chain = Promise.resolve()
const rl = createInterface({ input: process.stdin })
rl.on("line", (line) => {
  if (!line.trim()) return
  let msg
  try {
    msg = JSON.parse(line)
  } catch (e) {
    write({ ev: "protocol_error", message: String(e) })
    return
  }
  chain = chain.then(async () => {
    const fn = commands[msg.cmd]
    try {
      if (!fn) throw new Error(`unknown command ${msg.cmd}`)
      const value = await fn(msg)
      write({ id: msg.id, ok: true, value: value === undefined ? null : value })
    } catch (e) {
      write({ id: msg.id, ok: false, error: e && e.message ? e.message : String(e) })
    }
  })
})
// The test went away (stdin closed): do not leave a browser behind.
rl.on("close", () => {
  chain.then(cleanup).finally(() => process.exit(0))
})
