// Package reasons holds the one catalogue of what a client or a backend
// can be told when something is refused or fails: HTTP statuses before an
// upgrade, WebSocket close codes, phx_reply error reasons, resume reasons
// and the HTTP API's error codes. docs/errors.md is generated from it, and
// the test below reads the source so that a reason cannot be added,
// renamed or dropped in the code without the catalogue following.
package reasons

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update-errors-doc", false, "rewrite docs/errors.md from the catalogue")

// kind is where an entry is seen.
type kind int

const (
	upgrade kind = iota // HTTP status and {"reason": …} before a WebSocket upgrade or a LongPoll session
	closing             // a WebSocket close code
	reply               // phx_reply {"status":"error","response":{"reason": …}}
	resume              // a join reply's {"recovered": false, "reason": …}
	api                 // the HTTP API's {"error": …, "message": …}
)

type entry struct {
	kind   kind
	name   string // the reason or error code ("" for close codes)
	code   int    // HTTP status or close code
	when   string // Markdown
	client string // what phoenix.js or the caller does about it (optional)
}

// catalogue is the single list. Keep each kind's entries in the order a
// reader meets them.
var catalogue = []entry{
	{upgrade, "unsupported_vsn", 400, "`vsn` other than 1.0.x / 2.0.x", ""},
	{upgrade, "missing_token", 401, "no token (phoenix.js `authToken` subprotocol, `X-Phoenix-AuthToken` header, or the `token` query parameter unless `--allow-query-token=false`)", "phoenix.js reconnects with its `params` again"},
	{upgrade, "invalid_token", 401, "bad signature, wrong issuer or audience, a required claim missing, a malformed token", ""},
	{upgrade, "token_expired", 401, "`exp` past, beyond `--jwt-leeway`", "refresh the token in the `params` function"},
	{upgrade, "token_not_valid_yet", 401, "`nbf` or `iat` in the future, beyond `--jwt-leeway`", ""},
	{upgrade, "missing_sub", 401, "a valid token without `sub` (budgets are per user)", ""},
	{upgrade, "token_revoked", 401, "the token was revoked (`Revoke` by `jti`, or every token of its user issued before a time); also each LongPoll poll", "get a new token; see [cluster-control.md](cluster-control.md)"},
	{upgrade, "banned", 403, "the user was disconnected with a ban (`Disconnect` with a duration) that has not ended; `Retry-After` = seconds left", "stay away until then ([cluster-control.md](cluster-control.md))"},
	{upgrade, "(the service's reason)", 403, "`--connect-hook`: the service refused the connection; the body carries the service's reason, or `refused`, `no_handler`, `timeout`, `unavailable`, `invalid_reply` ([hooks.md](hooks.md))", ""},
	{upgrade, "revocation_list_unavailable", 503, "the gateway has not read the revocation list yet (fail closed); `Retry-After: 1`", "retry"},
	{upgrade, "origin_not_allowed", 403, "`Origin` not on `--allowed-origins`", ""},
	{upgrade, "too_many_auth_failures", 429, "the address presented more than `--auth-failure-rate` bad credentials per second; `Retry-After`", ""},
	{upgrade, "too_many_connections", 429, "over `--max-connections-per-ip` or `--max-connections-per-user`; `Retry-After`", ""},
	{upgrade, "overloaded", 503, "over `--max-connections`, `--max-pending-handshakes` or `--max-accept-rate`; `Retry-After`", "phoenix.js retries with backoff"},

	{closing, "", 1000, "normal close (the client left)", ""},
	{closing, "", 1001, "the gateway is stopping (after the drain window)", "reconnect elsewhere, resume by offset"},
	{closing, "", 1002, "protocol error: unmasked frame, reserved opcode or RSV bit, bad control frame or close code", ""},
	{closing, "", 1003, "a binary frame to a v1 (JSON-only) client", ""},
	{closing, "", 1005, "never sent: reported when the peer's close frame had no code", ""},
	{closing, "", 1006, "never sent: reported when the TCP connection died", ""},
	{closing, "", 1007, "invalid UTF-8 in a text frame, or JSON that is not a Phoenix message and has no readable ref/topic", ""},
	{closing, "", 1008, "policy violation", ""},
	{closing, "", 1009, "a message over `--max-message-size` (one frame or many fragments), checked before buffering", ""},
	{closing, "", 1011, "internal error", ""},
	{closing, "", 1012, "drain: the gateway is restarting; clients are closed in batches over `--drain-window`", "reconnect (to another gateway) and resume"},
	{closing, "", 1013, "try again later", ""},
	{closing, "", 4000, "nothing received for `--idle-timeout` (phoenix.js heartbeats every 30 s)", ""},
	{closing, "", 4001, "the connection's token expired", "phoenix.js reconnects with the token its `params`/`authToken` function returns"},
	{closing, "", 4003, "forbidden", ""},
	{closing, "", 4008, "slow consumer: queued output over `--max-queue-bytes` or not drained for `--write-timeout`, or the connection held the most queued output when the process went over `--max-output-bytes`; other members are unaffected", "reconnect and resume by offset"},
	{closing, "", 4010, "`Disconnect` by the server API or `fabric kick` (default code; the caller may give another, and a reason)", "reconnects (a ban keeps it out: 403 `banned`)"},
	{closing, "", 4011, "`Disconnect` with a ban (default code)", "its reconnects are refused with 403 `banned` until the ban ends"},
	{closing, "", 4012, "the connection's token was revoked", "reconnect with a new token"},
	{closing, "", 4029, "sustained abuse of the join or push rate (more than ten bursts refused within ten seconds); replies already queued are sent first", ""},

	{reply, "bad_request", 0, "valid JSON, wrong shape (no event, no payload, join params not an object); the connection is kept", ""},
	{reply, "invalid_topic", 0, "a topic Fabric can never map (empty segment, `*`, control characters, lone surrogate…); no subscription is created", ""},
	{reply, "unmatched topic", 0, "a push to a topic not joined (`join_ref` is `null`, as in Phoenix)", ""},
	{reply, "unauthorized", 0, "a join or push outside the token's grants; no subscription", ""},
	{reply, "too many channels joined", 0, "over `--max-channels` on one connection", ""},
	{reply, "too many channels joined by user", 0, "over `--max-channels-per-user` across the user's connections on this gateway", ""},
	{reply, "rate_limited", 0, "over `--join-rate`, `--push-rate` or `--push-bytes-rate`; carries `retry_after_ms`", "retry after that long"},
	{reply, "reserved_event", 0, "a push named like an event the server sends (`phx_*`, `chan_reply_*`, `presence_*`, `fabric:*`)", ""},
	{reply, "invalid_event", 0, "a push event empty, over 255 bytes, surrounded by spaces, with control characters or a lone surrogate", ""},
	{reply, "too_large", 0, "the bus refused the payload as over its size cap (NATS `max_payload`, or the stream's `max_msg_size`)", ""},
	{reply, "publish_failed", 0, "the bus did not accept the push for another reason (NATS down, stream not answering)", "retry"},
	{reply, "unavailable", 0, "the bus is known to be away (the NATS link failed its probes): joins and pushes are answered at once", "phoenix.js rejoins with backoff"},
	{reply, "no_handler", 0, "routed pushes (`pushes: request`): no service listens", ""},
	{reply, "timeout", 0, "routed pushes: no answer within `push_timeout`; joins: no answer within the join timeout", ""},
	{reply, "refused", 0, "join hook (`joins: request`): the service refused without a reason (a refusal with a reason carries the service's own); also `no_handler`, `timeout`, `unavailable`, `invalid_reply` for joins ([hooks.md](hooks.md))", ""},
	{reply, "invalid_reply", 0, "routed pushes: the service answered JSON that is not an object", ""},

	{resume, "history_gone", 0, "messages after the client's offset are no longer all stored (limits, purge)", "`onGap`: reload the state"},
	{resume, "epoch_changed", 0, "the stream was recreated since the client's epoch", "`onGap`: reload the state"},
	{resume, "history_cleared", 0, "the channel's history was cleared (`fabric channel clear`, the `ClearChannel` RPC) after the client's offset", "`onGap`: reload the state"},
	{resume, "offset_ahead", 0, "the client's offset is past the stream's last message", "`onGap`: reload the state"},

	{api, "unauthenticated", 401, "missing or unknown credentials", ""},
	{api, "forbidden", 403, "the credentials may not publish", ""},
	{api, "not_found", 404, "no such endpoint", ""},
	{api, "method_not_allowed", 405, "not a POST", ""},
	{api, "invalid_body", 400, "the body is not a valid request (or a batch over its size)", ""},
	{api, "invalid_topic", 400, "a topic Fabric can never map", ""},
	{api, "invalid_event", 400, "an unusable or reserved event name", ""},
	{api, "invalid_option", 400, "a bad option (content type, idempotency key)", ""},
	{api, "too_large", 413, "the body, or the message, over the limit", ""},
	{api, "rate_limited", 429, "over the credential's request rate; `Retry-After`", "retry after that long"},
	{api, "unsupported_media_type", 415, "`Content-Type` other than `application/json` or `application/x-protobuf`", ""},
	{api, "internal", 500, "published, but the response could not be encoded", ""},
	{api, "unavailable", 503, "not acknowledged (NATS away, stream not answering); retry with the same `idempotency_key`", "retry"},
}

// found is what the source says: reason strings, close codes and API
// error codes, each with where it was seen.
type found struct {
	reasons map[string]string // reason → file:line
	closes  map[int]string
	apiErrs map[string]int // code → HTTP status
}

// scan reads every non-test Go file of the server module (not the clients,
// load tools or tests, which are not the server's contract).
func scan(t *testing.T, root string) found {
	t.Helper()
	f := found{reasons: map[string]string{}, closes: map[int]string{}, apiErrs: map[string]int{}}
	fset := token.NewFileSet()
	skip := map[string]bool{"clients": true, "deploy": true, "test": true, "examples": true, "bench": true, "node_modules": true}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if skip[rel] || rel == filepath.Join("internal", "bench") || rel == filepath.Join("internal", "phxclient") || strings.HasPrefix(d.Name(), ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		file, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		at := func(n ast.Node) string { p := fset.Position(n.Pos()); return fmt.Sprintf("%s:%d", rel, p.Line) }
		str := func(e ast.Expr) (string, bool) {
			if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
				s, err := strconv.Unquote(bl.Value)
				return s, err == nil
			}
			return "", false
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				for i, name := range n.Names {
					if i >= len(n.Values) {
						break
					}
					if strings.HasPrefix(name.Name, "Reason") {
						if s, ok := str(n.Values[i]); ok {
							f.reasons[s] = at(n)
						}
					}
					// Close codes: constants of type CloseCode.
					if isCloseCode(n.Type) {
						if bl, ok := n.Values[i].(*ast.BasicLit); ok && bl.Kind == token.INT {
							c, _ := strconv.Atoi(bl.Value)
							f.closes[c] = at(n)
						}
					}
				}
			case *ast.KeyValueExpr:
				// refusal{reason: "…"}, Error{reason: "…"}
				if k, ok := n.Key.(*ast.Ident); ok && (k.Name == "reason" || k.Name == "Reason") {
					if s, ok := str(n.Value); ok && !strings.Contains(s, " has ") {
						f.reasons[s] = at(n)
					}
				}
			case *ast.CallExpr:
				// h.writeError(w, http.StatusX, "code", …)
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "writeError" && len(n.Args) >= 3 {
					if s, ok := str(n.Args[2]); ok {
						if st, ok := n.Args[1].(*ast.SelectorExpr); ok {
							f.apiErrs[s] = httpStatus[st.Sel.Name]
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// isCloseCode reports whether a constant's declared type is CloseCode or
// transport.CloseCode.
func isCloseCode(e ast.Expr) bool {
	switch t := e.(type) {
	case *ast.Ident:
		return t.Name == "CloseCode"
	case *ast.SelectorExpr:
		return t.Sel.Name == "CloseCode"
	}
	return false
}

var httpStatus = map[string]int{
	"StatusBadRequest": 400, "StatusUnauthorized": 401, "StatusForbidden": 403, "StatusNotFound": 404,
	"StatusMethodNotAllowed": 405, "StatusRequestEntityTooLarge": 413, "StatusUnsupportedMediaType": 415,
	"StatusTooManyRequests": 429, "StatusInternalServerError": 500, "StatusServiceUnavailable": 503,
}

// The catalogue and the code agree both ways: every reason, close code and
// API error the server can send is catalogued, and every catalogued one is
// still sent by something.
func TestCatalogueMatchesCode(t *testing.T) {
	f := scan(t, "../..")
	if len(f.reasons) < 20 || len(f.closes) < 10 || len(f.apiErrs) < 8 {
		t.Fatalf("scan found too little (%d reasons, %d close codes, %d API errors): has the code moved?", len(f.reasons), len(f.closes), len(f.apiErrs))
	}
	catReasons, catCloses, catAPI := map[string]bool{}, map[int]bool{}, map[string]int{}
	for _, e := range catalogue {
		switch e.kind {
		case closing:
			catCloses[e.code] = true
		case api:
			catAPI[e.name] = e.code
		default:
			catReasons[e.name] = true
		}
	}
	for r, where := range f.reasons {
		if !catReasons[r] {
			t.Errorf("reason %q (%s) is not in the catalogue (test/reasons)", r, where)
		}
	}
	for r := range catReasons {
		if strings.HasPrefix(r, "(") {
			continue // not a fixed string: described, not sent as is
		}
		if _, ok := f.reasons[r]; !ok {
			t.Errorf("catalogued reason %q is not sent by the code any more (or is no longer a Reason* constant or reason: field)", r)
		}
	}
	for c, where := range f.closes {
		if !catCloses[c] {
			t.Errorf("close code %d (%s) is not in the catalogue", c, where)
		}
	}
	for c := range catCloses {
		if _, ok := f.closes[c]; !ok {
			t.Errorf("catalogued close code %d is not a CloseCode constant any more", c)
		}
	}
	for code, status := range f.apiErrs {
		if s, ok := catAPI[code]; !ok {
			t.Errorf("API error %q (HTTP %d) is not in the catalogue", code, status)
		} else if s != status {
			t.Errorf("API error %q: catalogue says HTTP %d, the code sends %d", code, s, status)
		}
	}
	for code := range catAPI {
		if _, ok := f.apiErrs[code]; !ok {
			t.Errorf("catalogued API error %q is not sent any more", code)
		}
	}
}

const doc = "../../docs/errors.md"

// docs/errors.md is exactly the catalogue rendered (-update-errors-doc
// rewrites it).
func TestErrorsDoc(t *testing.T) {
	want := render()
	got, err := os.ReadFile(doc)
	if err == nil && string(got) == want {
		return
	}
	if *update {
		if err := os.WriteFile(doc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/errors.md is out of date with the catalogue in test/reasons; run: go test ./test/reasons -update-errors-doc")
}

func render() string {
	var b strings.Builder
	b.WriteString(`# Errors: every refusal a client or a backend can see

Generated from the catalogue in ` + "`test/reasons`" + ` (` + "`go test ./test/reasons -update-errors-doc`" + `),
which a test keeps in step with the code: a reason, close code or API error
the server sends is listed here, and everything listed here is still sent.
Refusals never lose anything that was accepted: a refused join creates no
subscription, a refused push is not published, and the connection stays open
unless a close code below says otherwise.
`)
	sections := []struct {
		k     kind
		title string
		head  string
	}{
		{upgrade, "Before the upgrade (WebSocket and LongPoll)", "The HTTP request is answered with a status and a JSON body `{\"reason\": \"…\"}`; no connection is made."},
		{closing, "Close codes", "An open WebSocket is closed with one of these codes (LongPoll sessions end with the matching status)."},
		{reply, "Error replies", "A join, push or leave is answered `phx_reply` `{\"status\":\"error\",\"response\":{\"reason\":\"…\"}}`, echoing `join_ref` and `ref`; the connection is kept."},
		{resume, "Resume reasons", "A join with a resume position is answered `ok` with `{\"recovered\": false, \"reason\": \"…\"}` when the gap cannot be filled; the channel then continues live from the current position (details: [history.md](history.md))."},
		{api, "HTTP API errors", "`/api/v1/…` answers a status and `{\"error\": \"…\", \"message\": \"…\"}` (details: [http-api.md](http-api.md))."},
	}
	for _, s := range sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n", s.title, s.head)
		var rows []entry
		for _, e := range catalogue {
			if e.kind == s.k {
				rows = append(rows, e)
			}
		}
		switch s.k {
		case closing:
			sort.SliceStable(rows, func(i, j int) bool { return rows[i].code < rows[j].code })
			b.WriteString("| code | when | what the client does |\n|---|---|---|\n")
			for _, e := range rows {
				fmt.Fprintf(&b, "| %d | %s | %s |\n", e.code, e.when, e.client)
			}
		case upgrade, api:
			b.WriteString("| status | reason | when | what the client does |\n|---|---|---|---|\n")
			for _, e := range rows {
				name := "`" + e.name + "`"
				if strings.HasPrefix(e.name, "(") {
					name = strings.Trim(e.name, "()")
				}
				fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", e.code, name, e.when, e.client)
			}
		default:
			b.WriteString("| reason | when | what the client does |\n|---|---|---|\n")
			for _, e := range rows {
				fmt.Fprintf(&b, "| `%s` | %s | %s |\n", e.name, e.when, e.client)
			}
		}
	}
	return b.String()
}
