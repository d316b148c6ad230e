package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/config"
)

// The start line logs every setting with its source, but never a secret:
// not the JWT or LongPoll secrets, the API keys, the NATS password or
// token, nor credentials inside the NATS URL.
func TestServeStartLogRedactsSecrets(t *testing.T) {
	secrets := map[string]string{
		"jwt":      "jwt-secret-0123456789abcdef0123456789abcdef",
		"api1":     "api-key-one-4711",
		"api2":     "api-key-two-4712",
		"longpoll": "longpoll-secret-4713",
		"password": "nats-password-4714",
		"urlpass":  "url-password-4715",
		"token":    "nats-token-4716",
	}
	dir := t.TempDir()
	for _, format := range []string{"text", "json"} {
		for _, tc := range []struct {
			name    string
			args    []string
			environ []string
		}{
			{"flags", []string{
				"--jwt-secret", secrets["jwt"],
				"--publish-api-keys", secrets["api1"] + "," + secrets["api2"],
				"--longpoll-secret", secrets["longpoll"],
				"--nats-url", "nats://alice:" + secrets["urlpass"] + "@127.0.0.1:1,nats://bob:" + secrets["urlpass"] + "@127.0.0.1:2",
				"--nats-user", "alice", "--nats-password", secrets["password"],
			}, nil},
			{"environment", nil, []string{
				"FABRIC_JWT_SECRET=" + secrets["jwt"],
				"FABRIC_PUBLISH_API_KEYS=" + secrets["api1"] + "," + secrets["api2"],
				"FABRIC_LONGPOLL_SECRET=" + secrets["longpoll"],
				"FABRIC_NATS_URL=nats://127.0.0.1:1",
				"FABRIC_NATS_TOKEN=" + secrets["token"],
			}},
		} {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				var out, errb syncBuffer
				args := append([]string{"--listen", "127.0.0.1:0", "--ops-listen", "off", "--data-dir", dir, "--log-format", format}, tc.args...)
				// Nothing listens on port 1: serve logs its start line,
				// then fails to connect to NATS.
				err := serve(context.Background(), args, append(tc.environ, "FABRIC_LOG_LEVEL=info"), &out, &errb)
				if err == nil {
					t.Fatal("serve started without a NATS server")
				}
				logged := errb.String() + out.String() + err.Error()
				if !strings.Contains(logged, "starting") || !strings.Contains(logged, "[redacted]") {
					t.Fatalf("no start line with redacted values:\n%s", logged)
				}
				for what, s := range secrets {
					if strings.Contains(logged, s) {
						t.Errorf("the %s secret %q is in the output:\n%s", what, s, logged)
					}
				}
				// Not-secret settings are still there.
				if !strings.Contains(logged, "127.0.0.1:1") || !strings.Contains(logged, "allow-query-token") {
					t.Errorf("settings missing from the start line:\n%s", logged)
				}
			})
		}
	}
}

// startAttrs hides credentials in URL-valued flags and keeps booleans.
func TestStartAttrs(t *testing.T) {
	var cfg app.Config
	var s1, s2 string
	var d time.Duration
	fs := serveFlags(&cfg, &s1, &s2, &d)
	fs.SetOutput(io.Discard)
	if _, err := config.Load(fs, []string{"--jwks-url", "https://u:pw-4717@keys.example.com/jwks", "--routes", "nats-route://r:pw-4718@10.0.0.2:6222"},
		config.Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: []string{"FABRIC_ALLOW_QUERY_TOKEN=false"}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	newLoggerMust(t, &buf).Info("starting", startAttrs(fs, config.Sources(fs))...)
	got := buf.String()
	for _, want := range []string{
		"jwks-url.value=https://redacted@keys.example.com/jwks jwks-url.source=flag",
		"routes.value=nats-route://redacted@10.0.0.2:6222 routes.source=flag",
		"allow-query-token.value=false allow-query-token.source=env",
		"max-accept-rate.value=2000 max-accept-rate.source=default",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "pw-47") {
		t.Errorf("a URL password was logged:\n%s", got)
	}
}

func newLoggerMust(t *testing.T, w io.Writer) interface{ Info(string, ...any) } {
	t.Helper()
	l, err := newLogger(w, "info", "text")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// FABRIC_JWT_SECRET reaches the gateway: connections without a valid token
// are refused with 401, a token signed with the secret is admitted.
func TestServeJWTSecretFromEnvironment(t *testing.T) {
	secret := strings.Repeat("k", 32)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--listen", "127.0.0.1:0", "--ops-listen", "off", "--nats-listen", "off"},
			[]string{"FABRIC_JWT_SECRET=" + secret, "FABRIC_DATA_DIR=" + t.TempDir(), "FABRIC_LOG_LEVEL=warn"}, &out, &errb)
	}()
	addr := waitServing(t, &out, &errb, done)

	get := func(query string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/socket/websocket?vsn=2.0.0"+query, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return resp.StatusCode, "" // a WebSocket now: nothing to read
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return resp.StatusCode, string(b)
	}
	if code, body := get(""); code != 401 || !strings.Contains(body, "missing_token") {
		t.Errorf("no token: %d %s, want 401 missing_token", code, body)
	}
	if code, body := get("&token=not.a.token"); code != 401 || !strings.Contains(body, "invalid_token") {
		t.Errorf("bad token: %d %s, want 401 invalid_token", code, body)
	}
	var tok, terr bytes.Buffer
	if code := run([]string{"token", "--sub", "u1", "--channels", "room:*", "--jwt-secret", secret}, &tok, &terr); code != 0 {
		t.Fatalf("token: %s", terr.String())
	}
	if code, body := get("&token=" + strings.TrimSpace(tok.String())); code != http.StatusSwitchingProtocols {
		t.Errorf("token signed with FABRIC_JWT_SECRET: %d %s, want 101", code, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), secret) {
		t.Fatalf("secret logged: %s", errb.String())
	}
}

// Credentials for an external NATS are refused without --nats-url, and an
// unreadable credentials file stops serve with its flag's name.
func TestServeNATSCredentialErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"creds without url", []string{"--nats-creds", dir + "/x.creds"}, "--nats-creds is for an external NATS and needs --nats-url, or for the embedded server's users and needs --nats-config"},
		{"unreadable creds", []string{"--nats-url", "nats://127.0.0.1:1", "--nats-creds", dir + "/missing.creds"}, "nats-creds:"},
		{"unreadable nkey", []string{"--nats-url", "nats://127.0.0.1:1", "--nats-nkey", dir + "/missing.nk"}, "nats-nkey:"},
		{"unreadable ca", []string{"--nats-url", "nats://127.0.0.1:1", "--nats-tls-ca", dir + "/missing.pem"}, "nats-tls-ca:"},
		{"cert without key", []string{"--nats-url", "nats://127.0.0.1:1", "--nats-tls-cert", dir + "/c.pem"}, "--nats-tls-cert and --nats-tls-key go together"},
		{"two methods", []string{"--nats-url", "nats://127.0.0.1:1", "--nats-token", "t", "--nats-user", "u"}, "not several"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			args := append([]string{"--listen", "127.0.0.1:0", "--ops-listen", "off", "--nats-listen", "off", "--data-dir", dir, "--log-level", "error"}, tc.args...)
			err := serve(context.Background(), args, []string{}, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if errors.Is(err, flag.ErrHelp) {
				t.Fatal(err)
			}
		})
	}
}

// waitServing waits for serve's "running" line and returns the client
// listener's address.
func waitServing(t *testing.T, out, errb *syncBuffer, done <-chan error) string {
	t.Helper()
	re := regexp.MustCompile(`demo page http://([0-9.:]+)/`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %q %q", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Logs are JSON unless they go to a terminal: collectors get structured
// lines without anyone remembering --log-format.
func TestLogFormatAuto(t *testing.T) {
	var b strings.Builder
	l, err := newLogger(&b, "info", "auto")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hello", "k", "v")
	if !strings.HasPrefix(b.String(), "{") || !strings.Contains(b.String(), `"msg":"hello"`) {
		t.Fatalf("auto format to a non-terminal: %q", b.String())
	}
	if _, err := newLogger(&b, "info", "xml"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

// fabric serve collects at GOGC=50 unless the environment sets GOGC.
func TestGCPercentDefault(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	if got := setGCPercent([]string{"GOGC=80"}); got != "80" {
		t.Fatalf("with GOGC=80: %q", got)
	}
	if now := debug.SetGCPercent(100); now != 100 {
		t.Fatalf("GOGC in the environment must win; the setting became %d", now)
	}
	if got := setGCPercent([]string{"PATH=/bin"}); got != "50" {
		t.Fatalf("default: %q", got)
	}
	if now := debug.SetGCPercent(100); now != defaultGCPercent {
		t.Fatalf("default not applied: %d", now)
	}
}
