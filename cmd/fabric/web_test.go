package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

// The demo page imports ./fabric.js from the embedded web/ directory (the
// implementation); clients/js/fabric.js, which apps and the Node tests
// import, must stay a pure re-export of it, so there is one copy.
func TestWebClientInSync(t *testing.T) {
	src, err := os.ReadFile("../../clients/js/fabric.js")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(src, []byte(`export * from "../../cmd/fabric/web/fabric.js";`)) {
		t.Fatal("clients/js/fabric.js must re-export cmd/fabric/web/fabric.js")
	}
	for _, line := range strings.Split(string(src), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "//") && !strings.HasPrefix(l, "export * from") {
			t.Fatalf("clients/js/fabric.js has code of its own: %q", l)
		}
	}
	if _, err := os.ReadFile("web/fabric.js"); err != nil {
		t.Fatal(err)
	}
}

// TestWebPageServed checks the embedded page's files are served with types a
// browser accepts for an ES module page, and that the page loads nothing from
// another origin.
func TestWebPageServed(t *testing.T) {
	srv := httptest.NewServer(homePage())
	defer srv.Close()
	for _, f := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `src="app.js"`},
		{"/app.js", "javascript", `from "./fabric.js"`},
		{"/fabric.js", "javascript", "export class FabricSocket"},
		{"/style.css", "text/css", ":root"},
	} {
		resp, err := http.Get(srv.URL + f.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %s", f.path, resp.Status)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, f.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %q", f.path, ct, f.ctype)
		}
		if !bytes.Contains(body, []byte(f.contains)) {
			t.Errorf("GET %s: body lacks %q", f.path, f.contains)
		}
		// Only plain <a href> links may point elsewhere; no src=, @import,
		// url() or import from another origin.
		external := regexp.MustCompile(`(?i)(src=|@import|url\(|import\s[^;]*from\s*|<link[^>]*href=)\s*["']?(https?:)?//`)
		if m := external.Find(body); m != nil {
			t.Errorf("GET %s: loads an external resource: %q", f.path, m)
		}
	}
}
