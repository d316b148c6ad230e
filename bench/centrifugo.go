package bench

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Centrifugo, the peer measured with --baseline centrifugo: the version
// and how it is installed when no binary is found.
const (
	CentrifugoVersion = "v6.9.1"
	CentrifugoModule  = "github.com/centrifugal/centrifugo/v6@" + CentrifugoVersion
)

// The secrets of a benchmark's Centrifugo: it listens on loopback only
// and lives for one run.
const (
	centrifugoTokenKey = "fabric-bench-hmac"
	centrifugoAPIKey   = "fabric-bench-api"
)

// CentrifugoBinary finds the centrifugo binary: $CENTRIFUGO, PATH, then
// GOBIN or GOPATH/bin. With install set and none found it runs `go install`
// (nice'd; it takes minutes) and logs that to log.
func CentrifugoBinary(ctx context.Context, install bool, log io.Writer) (string, error) {
	if p := os.Getenv("CENTRIFUGO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("centrifugo"); err == nil {
		return p, nil
	}
	gobin := goBinDir()
	p := filepath.Join(gobin, "centrifugo")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if !install {
		return "", fmt.Errorf("centrifugo not found (set $CENTRIFUGO, or `go install %s`)", CentrifugoModule)
	}
	fmt.Fprintf(log, "centrifugo: not found; go install %s (nice'd, takes minutes)\n", CentrifugoModule)
	cmd := exec.CommandContext(ctx, "nice", "-n", "15", "go", "install", CentrifugoModule)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s: %w", CentrifugoModule, err)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("go install %s: no %s afterwards", CentrifugoModule, p)
	}
	return p, nil
}

func goBinDir() string {
	if out, err := exec.Command("go", "env", "GOBIN").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		return filepath.Join(strings.SplitN(strings.TrimSpace(string(out)), string(os.PathListSeparator), 2)[0], "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go", "bin")
}

// centrifugoConfig is a Centrifugo v6 configuration doing the work of
// Fabric's defaults: the memory engine; namespace room with history (100
// messages, 1 h: Fabric's room:* keeps more, but a resume reads what it
// needs either way) and presence; namespace bench with neither, like
// Fabric's ephemeral bench:*. Clients connect with an HS256 JWT and may
// subscribe to both. With deflate, WebSocket compression is on (the v6
// keys websocket.compression, .compression_min_size, .compression_level;
// level 1 is Centrifugo's default): Centrifugo then compresses each
// message again for each connection that negotiated it.
func centrifugoConfig(port int, deflate bool) []byte {
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "error"},
		"engine":      map[string]any{"type": "memory"},
		"client": map[string]any{
			"token":           map[string]any{"hmac_secret_key": centrifugoTokenKey},
			"allowed_origins": []string{"*"},
		},
		"http_api": map[string]any{"key": centrifugoAPIKey},
		"channel": map[string]any{
			"namespaces": []map[string]any{
				{"name": "room", "history_size": 100, "history_ttl": "1h", "presence": true, "allow_subscribe_for_client": true},
				{"name": "bench", "allow_subscribe_for_client": true},
			},
		},
	}
	if deflate {
		cfg["websocket"] = map[string]any{
			"compression":          true,
			"compression_min_size": centrifugoCompressionMinSize,
			"compression_level":    1,
		}
	}
	b, _ := json.Marshal(cfg)
	return b
}

// centrifugoToken is a connection JWT (HS256) for user sub.
func centrifugoToken(sub string) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims := enc.EncodeToString([]byte(`{"sub":"` + sub + `","exp":` + strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10) + `}`))
	m := hmac.New(sha256.New, []byte(centrifugoTokenKey))
	m.Write([]byte(head + "." + claims))
	return head + "." + claims + "." + enc.EncodeToString(m.Sum(nil))
}

// centrifugoHandshake sends the connect and subscribe commands (one frame,
// newline-delimited JSON, as Centrifugo's JSON protocol allows) and waits
// for both replies.
func centrifugoHandshake(c *benchConn, i int, channel string, buf *[]byte) error {
	cmd := `{"id":1,"connect":{"token":"` + centrifugoToken("u"+strconv.Itoa(i)) + `","name":"fabric-bench"}}` + "\n" +
		`{"id":2,"subscribe":{"channel":"` + channel + `"}}`
	if err := c.write(ws.OpText, []byte(cmd)); err != nil {
		return err
	}
	got := 0
	for got < 2 {
		p, err := c.readFrame(c.rd, buf)
		if err != nil {
			return fmt.Errorf("centrifugo connect/subscribe %s: %w", channel, err)
		}
		for _, line := range bytes.Split(p, []byte("\n")) {
			var r struct {
				ID    int             `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &r) != nil || r.ID == 0 {
				continue
			}
			if len(r.Error) > 0 {
				return fmt.Errorf("centrifugo %s: %s", channel, line)
			}
			got++
		}
	}
	return nil
}

// centrifugoPublisher publishes through Centrifugo's HTTP API. Requests
// run in the background, at most centrifugoInFlight at once: a request is
// answered only after Centrifugo handled it, so publishing one at a time
// would pace the publisher by the server (1.3 msg/s instead of 5 on a
// loaded machine) where NATS publishers just send.
type centrifugoPublisher struct {
	url     string // …/api/publish
	channel string
	client  *http.Client
	p       payload
	sem     chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	err     error // the first failed request's
}

const centrifugoInFlight = 32

func newCentrifugoPublisher(apiBase, channel string, size int) *centrifugoPublisher {
	return &centrifugoPublisher{url: apiBase + "/api/publish", channel: channel, p: payload{size: size},
		sem:    make(chan struct{}, centrifugoInFlight),
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: centrifugoInFlight}}}
}

func (c *centrifugoPublisher) publish() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	data := c.p.next()
	b := make([]byte, 0, len(data)+len(c.channel)+32)
	b = append(b, `{"channel":"`...)
	b = append(b, c.channel...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	b = append(b, '}')
	c.sem <- struct{}{}
	c.wg.Add(1)
	go func() {
		defer func() { <-c.sem; c.wg.Done() }()
		if err := c.post(b); err != nil {
			c.mu.Lock()
			if c.err == nil {
				c.err = err
			}
			c.mu.Unlock()
		}
	}()
	return nil
}

func (c *centrifugoPublisher) post(b []byte) error {
	req, err := http.NewRequest(http.MethodPost, c.url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", centrifugoAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("centrifugo publish: %w", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("centrifugo publish: %s: %s", resp.Status, body)
	}
	return nil
}

// flush waits until every request was answered (or timeout passed).
func (c *centrifugoPublisher) flush(timeout time.Duration) error {
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		return fmt.Errorf("centrifugo publish: requests unanswered after %s", timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *centrifugoPublisher) close() {
	_ = c.flush(10 * time.Second)
	c.client.CloseIdleConnections()
}
