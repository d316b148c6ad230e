package browser

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

var updateDemoPNG = flag.Bool("update-demo-png", false, "also write the demo page screenshot to docs/demo.png (1280x800)")

// fabricProcess is the real binary, as a user runs it.
type fabricProcess struct {
	httpAddr, natsURL string
	exited            chan struct{}
}

// startFabricBinary builds ./cmd/fabric (once per test process) and runs
// `fabric serve` on free loopback ports, anonymous (loopback only), with its
// own data dir.
// With -update-demo-png it prefers the default ports (4000, 4222), so the
// picture shows the URLs a user sees.
func startFabricBinary(t *testing.T, logDir string) *fabricProcess {
	t.Helper()
	bin, dir := proctest.FabricBinary(t), t.TempDir()
	httpPort, natsPort := freePort(t), freePort(t)
	if *updateDemoPNG {
		if portFree(4000) && portFree(4222) {
			httpPort, natsPort = 4000, 4222
		} else {
			t.Logf("127.0.0.1:4000 or :4222 is in use; docs/demo.png will show port %d", httpPort)
		}
	}
	p := &fabricProcess{
		httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPort),
		natsURL:  fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		exited:   make(chan struct{}),
	}
	logPath := filepath.Join(logDir, "fabric.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve",
		"--listen", p.httpAddr,
		"--ops-listen", "off",
		"--nats-listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"--data-dir", filepath.Join(dir, "data"),
	)
	// fabric refuses unknown FABRIC_* variables, and the test's own
	// (FABRIC_ARTIFACTS, FABRIC_CHROMIUM) are none of its business.
	cmd.Env = proctest.Env()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("fabric serve log:\n%s", b)
			}
		}
	})
	waitHTTP(t, "http://"+p.httpAddr+"/", 30*time.Second, p.exited)
	return p
}

// The demo page served by the real binary joins room:lobby by itself and
// shows what a backend publishes with nats.go (JSON and binary) and what
// the page itself pushes.
func TestDemoPage(t *testing.T) {
	requireBrowser(t)
	arts := artifactsDir(t)
	t.Logf("artifacts: %s", arts)
	start := time.Now()
	f := startFabricBinary(t, arts)
	t.Logf("fabric serve up on %s (build + start %v)", f.httpAddr, time.Since(start).Round(time.Millisecond))

	nc, err := nats.Connect(f.natsURL)
	if err != nil {
		t.Fatalf("connect to fabric's NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	publish := func(event string, body []byte) {
		t.Helper()
		m := nats.NewMsg("fabric.room.lobby")
		m.Header.Set("Fabric-Event", event)
		m.Data = body
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	b := startBrowser(t)
	b.open("http://"+f.httpAddr+"/", 1280, 800)
	b.wait("socket open", `document.getElementById("state").textContent === "open"`, 15*time.Second)
	b.wait("room:lobby joined", `document.getElementById("chan-state").textContent === "joined"`, 15*time.Second)
	t.Logf("page joined %v after start", time.Since(start).Round(time.Millisecond))

	// Fabric tracks presence on rooms; the page shows its Online list once
	// presence_state arrived (when the gateway has presence). Let it settle
	// first so the screenshot is the same every time (best effort).
	if _, err := b.do(map[string]any{"cmd": "wait", "expr": `!document.getElementById("presence").hidden`, "timeout": 3000}, 15*time.Second); err != nil {
		t.Logf("no presence list shown (%v); going on", err)
	}

	// 1. JSON from a backend, through NATS.
	// (The data dir is fresh, so this text cannot be anything but this message.)
	text := "Hello from a backend service, via NATS"
	publish("new_msg", fmt.Appendf(nil, `{"user":"orders-service","body":%q}`, text))
	b.wait("the published message in the log", fmt.Sprintf(`document.getElementById("log").textContent.includes(%q)`, text), 10*time.Second)
	var first struct {
		Event, Body string
		HasOffset   bool
	}
	b.eval(`(() => { const li = [...document.querySelectorAll("#log li.msg")].find((li) => li.textContent.includes("orders-service"));
		return { event: li.querySelector(".event").textContent, body: li.querySelector("pre").textContent,
		         hasOffset: !!li.querySelector(".offset") } })()`, &first)
	if first.Event != "new_msg" || !strings.Contains(first.Body, text) || !first.HasOffset {
		t.Fatalf("log entry of the published message: %+v", first)
	}

	// 2. Binary from a backend: shown as a hex dump, offset from fabric:offset.
	publish("sensor_frame", []byte{0xfa, 0xb1, 0x00, 0x2a, 'h', 'i'})
	b.wait("the binary message in the log", `(() => { const li = [...document.querySelectorAll("#log li.msg")]
		    .find((li) => li.querySelector(".event").textContent === "sensor_frame");
		return li
		    && li.querySelector(".tag.binary")?.textContent === "binary, 6 bytes"
		    && li.querySelector("pre").textContent === "fa b1 00 2a 68 69"
		    && !!li.querySelector(".offset") })()`, 10*time.Second)

	// 3. The page's own push, broadcast back to it.
	b.fill("#payload", `{"user":"browser","body":"hi from the demo page"}`)
	b.click("#push")
	b.wait("push acknowledged", `document.getElementById("push-result").textContent.startsWith("ok")`, 10*time.Second)
	b.wait("own push in the log", `document.getElementById("log").textContent.includes("hi from the demo page")`, 10*time.Second)

	// Each message once.
	var events []string
	b.eval(`[...document.querySelectorAll("#log li.msg .event")].map((e) => e.textContent)
		.filter((e) => e === "new_msg" || e === "sensor_frame")`, &events)
	if fmt.Sprint(events) != "[new_msg sensor_frame new_msg]" {
		t.Fatalf("log shows %v, want the push, the binary and the JSON message, newest first", events)
	}
	if errs := b.pageErrors(); len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
	// Settle fonts and layout for the picture, and bring the messages into
	// view.
	b.eval(`document.querySelector(".log-panel").scrollIntoView({block: "nearest"}) ?? true`, nil)
	b.eval(`document.fonts.ready.then(() => new Promise((r) => requestAnimationFrame(() => r(true))))`, nil)
	b.eval(`document.activeElement?.blur?.() ?? true`, nil)
	shot := filepath.Join(arts, "demo-page.png")
	b.screenshot(shot)
	if *updateDemoPNG {
		dst := filepath.Join(repoRoot(t), "docs", "demo.png")
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(shot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dst)
	}
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
