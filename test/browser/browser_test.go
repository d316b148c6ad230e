// Package browser holds Fabric's real-browser tests: Debian's Chromium,
// driven by playwright-core (clients/js/test/browser/run.mjs, controlled over
// stdin/stdout JSON lines), loads the demo page or a page running the
// official phoenix client against a Fabric started by the test. Assertions
// stay in Go: the test reads what the page observed with page.evaluate.
//
// Prerequisites (the tests skip without them, and fail when CI is set):
//
//	apt-get install -y chromium
//	npm ci --prefix clients/js
//
// FABRIC_CHROMIUM overrides the browser binary (default /usr/bin/chromium).
// Screenshots go to $FABRIC_ARTIFACTS when set, else to a temporary
// directory; each test logs the path. To refresh the README screenshot:
//
//	go test ./test/browser/ -run TestDemoPage -update-demo-png
package browser

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const installHint = "install the browser test prerequisites with: apt-get install -y chromium && npm ci --prefix clients/js"

// repoRoot is the module root (tests run in test/browser).
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("cannot find the repository root from %s: %v", root, err)
	}
	return root
}

func chromiumPath() string {
	if p := os.Getenv("FABRIC_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// requireBrowser skips (fails under CI) when node, playwright-core or
// Chromium is missing, with the command that installs them.
func requireBrowser(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests are skipped in -short mode")
	}
	root := repoRoot(t)
	var missing []string
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node (apt-get install -y nodejs npm)")
	}
	if _, err := os.Stat(filepath.Join(root, "clients", "js", "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "playwright-core (npm ci --prefix clients/js)")
	}
	if _, err := os.Stat(filepath.Join(root, "clients", "js", "node_modules", "phoenix", "priv", "static", "phoenix.mjs")); err != nil {
		missing = append(missing, "phoenix (npm ci --prefix clients/js)")
	}
	if st, err := os.Stat(chromiumPath()); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		missing = append(missing, "chromium at "+chromiumPath()+" (apt-get install -y chromium, or set FABRIC_CHROMIUM)")
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("missing %s; %s", strings.Join(missing, ", "), installHint)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// artifactsDir is where screenshots and logs go: $FABRIC_ARTIFACTS/<test>
// when set, else a temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FABRIC_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ---------------------------------------------------------------------------
// the playwright driver

// browser is one run.mjs process: one Chromium with one page at a time.
type browser struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{} // the reader goroutine ended (process stdout closed)
	stderr strings.Builder

	mu      sync.Mutex
	nextID  int
	pending map[int]chan response
	events  []event
	logf    func(string, ...any) // nil once the test is over
}

type response struct {
	ID    int             `json:"id"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

type event struct {
	Ev      string          `json:"ev"`
	Data    json.RawMessage `json:"data"`
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	Message string          `json:"message"`
	URL     string          `json:"url"`
	Status  int             `json:"status"`
	Failure string          `json:"failure"`
}

func (e event) String() string {
	switch e.Ev {
	case "page":
		return "page: " + string(e.Data)
	case "console":
		return fmt.Sprintf("console.%s: %s", e.Type, e.Text)
	case "response":
		return fmt.Sprintf("HTTP %d %s", e.Status, e.URL)
	case "requestfailed":
		return fmt.Sprintf("request failed: %s (%s)", e.URL, e.Failure)
	default:
		return fmt.Sprintf("%s: %s", e.Ev, e.Message)
	}
}

// startBrowser launches run.mjs; the browser is closed when the test ends.
// Register it after the servers it talks to, so it goes first.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	requireBrowser(t)
	root := repoRoot(t)
	cmd := exec.Command("node", filepath.Join("test", "browser", "run.mjs"))
	cmd.Dir = filepath.Join(root, "clients", "js")
	cmd.Env = append(os.Environ(), "FABRIC_CHROMIUM="+chromiumPath())
	b := &browser{t: t, cmd: cmd, done: make(chan struct{}), pending: map[int]chan response{}, logf: t.Logf}
	cmd.Stderr = &lockedWriter{w: &b.stderr}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	go b.read(stdout)
	t.Cleanup(b.close)
	return b
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (b *browser) read(r io.Reader) {
	defer close(b.done)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var probe struct {
			ID *int `json:"id"`
		}
		if json.Unmarshal(line, &probe) != nil {
			b.log("run.mjs wrote a non-JSON line: %s", line)
			continue
		}
		if probe.ID != nil {
			var resp response
			_ = json.Unmarshal(line, &resp)
			b.mu.Lock()
			ch := b.pending[resp.ID]
			delete(b.pending, resp.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- resp
			}
			continue
		}
		var ev event
		_ = json.Unmarshal(line, &ev)
		b.mu.Lock()
		b.events = append(b.events, ev)
		b.mu.Unlock()
		b.log("%s", ev)
	}
}

func (b *browser) log(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.logf != nil {
		b.logf(format, args...)
	}
}

// do sends one command and waits for its response.
func (b *browser) do(cmd map[string]any, timeout time.Duration) (json.RawMessage, error) {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan response, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	cmd["id"] = id
	line, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := b.stdin.Write(append(line, '\n')); err != nil {
		return nil, fmt.Errorf("write to run.mjs: %w (stderr: %s)", err, b.stderrText())
	}
	select {
	case resp := <-ch:
		if !resp.OK {
			return nil, errors.New(resp.Error)
		}
		return resp.Value, nil
	case <-b.done:
		return nil, fmt.Errorf("run.mjs exited (stderr: %s)", b.stderrText())
	case <-time.After(timeout):
		return nil, fmt.Errorf("no answer to %v within %v", cmd["cmd"], timeout)
	}
}

func (b *browser) stderrText() string {
	b.cmd.Stderr.(*lockedWriter).mu.Lock()
	defer b.cmd.Stderr.(*lockedWriter).mu.Unlock()
	return b.stderr.String()
}

func (b *browser) must(cmd map[string]any, timeout time.Duration) json.RawMessage {
	b.t.Helper()
	v, err := b.do(cmd, timeout)
	if err != nil {
		b.t.Fatalf("browser %v: %v", cmd["cmd"], err)
	}
	return v
}

// open loads url in a fresh page of the given viewport size.
func (b *browser) open(url string, width, height int) {
	b.t.Helper()
	b.must(map[string]any{"cmd": "open", "url": url, "width": width, "height": height}, 60*time.Second)
}

// eval returns the JSON value of a JS expression evaluated in the page.
func (b *browser) eval(expr string, v any) {
	b.t.Helper()
	raw := b.must(map[string]any{"cmd": "eval", "expr": expr}, 15*time.Second)
	if v != nil {
		if err := json.Unmarshal(raw, v); err != nil {
			b.t.Fatalf("eval %s: %v (value %s)", expr, err, raw)
		}
	}
}

// wait blocks until the JS expression is truthy in the page.
func (b *browser) wait(what, expr string, timeout time.Duration) {
	b.t.Helper()
	if _, err := b.do(map[string]any{"cmd": "wait", "expr": expr, "timeout": timeout.Milliseconds()}, timeout+10*time.Second); err != nil {
		b.t.Fatalf("waiting for %s (%s): %v", what, expr, err)
	}
}

func (b *browser) click(selector string) {
	b.t.Helper()
	b.must(map[string]any{"cmd": "click", "selector": selector}, 15*time.Second)
}

func (b *browser) fill(selector, value string) {
	b.t.Helper()
	b.must(map[string]any{"cmd": "fill", "selector": selector, "value": value}, 15*time.Second)
}

// screenshot saves a PNG of the viewport and logs its path.
func (b *browser) screenshot(path string) {
	b.t.Helper()
	b.must(map[string]any{"cmd": "shot", "path": path}, 30*time.Second)
	b.t.Logf("screenshot: %s", path)
}

// pageErrors are the uncaught exceptions the page threw so far.
func (b *browser) pageErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, e := range b.events {
		if e.Ev == "pageerror" || e.Ev == "fatal" {
			out = append(out, e.Message)
		}
	}
	return out
}

func (b *browser) close() {
	_, _ = b.do(map[string]any{"cmd": "exit"}, 15*time.Second)
	_ = b.stdin.Close()
	exited := make(chan error, 1)
	go func() { <-b.done; exited <- b.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-exited
	}
	if s := b.stderrText(); s != "" && b.t.Failed() {
		b.t.Logf("run.mjs stderr:\n%s", s)
	}
	b.mu.Lock()
	b.logf = nil
	b.mu.Unlock()
}

// ---------------------------------------------------------------------------
// small helpers

// freePort reserves a loopback port for a process that binds it itself.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, url string, within time.Duration, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("the server exited before %s answered", url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within %v (last error %v)", url, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testPages serves the phoenix test page on the gateway's own origin (as
// its Home handler): clients/js/test/browser/page.{html,js}, the phoenix ES
// module straight from node_modules, and phoenix-resume.js.
func testPages(t *testing.T) http.Handler {
	root := repoRoot(t)
	js := filepath.Join(root, "clients", "js")
	files := map[string]string{
		"/page.html":         filepath.Join(js, "test", "browser", "page.html"),
		"/page.js":           filepath.Join(js, "test", "browser", "page.js"),
		"/phoenix.mjs":       filepath.Join(js, "node_modules", "phoenix", "priv", "static", "phoenix.mjs"),
		"/phoenix-resume.js": filepath.Join(js, "phoenix-resume.js"),
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		if strings.HasSuffix(f, ".js") || strings.HasSuffix(f, ".mjs") {
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8") // module scripts need it
		}
		http.ServeFile(w, r, f)
	})
}

// listenLoopback opens a listener on a free loopback port.
func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
