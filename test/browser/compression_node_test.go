package browser

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// phoenix.js under Node with the ws package, which offers
// permessage-deflate: a compressing client and one that does not offer it
// share a channel; each gets every JSON and binary broadcast intact, the
// first compressed and the second plain, and the first's compressed
// pushes are accepted. Checked on the wire by the recording proxy.
func TestNodeCompressedAndPlainOnOneChannel(t *testing.T) {
	const secret = "browser-test-secret-0123456789abcdef"
	g := startGateway(t, app.Config{
		Listen:               "127.0.0.1:0",
		OpsListen:            "off",
		NATSListen:           "127.0.0.1:0",
		DataDir:              t.TempDir(),
		JWTSecret:            secret,
		AllowQueryToken:      true,
		LeaveGrace:           50 * time.Millisecond,
		Compression:          true,
		CompressionThreshold: 256,
	})
	token, err := auth.Mint(auth.Config{Secret: []byte(secret)},
		auth.MintClaims{Subject: "node-test", Channels: []string{"room:*"}, Publish: []string{"room:*"}})
	if err != nil {
		t.Fatal(err)
	}
	addr, wl := recordingProxy(t, g.HTTPAddr())
	url := "ws://" + addr + "/socket"

	z, plain, lp := phxnode.Start(t), phxnode.Start(t), phxnode.Start(t)
	if err := z.Connect(url, nil, map[string]any{"authToken": token}); err != nil {
		t.Fatal(err)
	}
	if err := plain.Connect(url, nil, map[string]any{"authToken": token, "perMessageDeflate": false}); err != nil {
		t.Fatal(err)
	}
	// A LongPoll client on the same channel: its poll answers are gzipped.
	if err := lp.Connect("http://"+addr+"/socket", nil, map[string]any{"authToken": token, "longpoll": true}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*phxnode.Puppet{z, plain, lp} {
		if status, resp := p.Join("room:mix", nil); status != "ok" {
			t.Fatalf("join: %s %s", status, resp)
		}
	}
	// ws compresses messages of 1 KiB and more; both texts are larger.
	textZ := strings.Repeat("sent by the compressing client; ", 40)
	textP := strings.Repeat("sent by the plain client; ", 50)
	blob := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 300)
	for _, push := range []struct {
		p       *phxnode.Puppet
		event   string
		payload any
	}{{z, "shout", map[string]string{"text": textZ}}, {plain, "shout", map[string]string{"text": textP}}, {z, "blob", blob}} {
		if status, resp := push.p.Push("room:mix", push.event, push.payload); status != "ok" {
			t.Fatalf("push %s: %s %s", push.event, status, resp)
		}
	}
	for name, p := range map[string]*phxnode.Puppet{"compressing": z, "plain": plain, "longpoll": lp} {
		for _, want := range []string{textZ, textP} {
			p.MustNext(10*time.Second, name+" gets "+want[:20], func(e phxnode.Event) bool {
				return e.Ev == "msg" && e.Topic == "room:mix" && e.Event == "shout" && strings.Contains(string(e.Payload), want)
			})
		}
		e := p.MustNext(10*time.Second, name+" gets the blob", phxnode.IsMsg("room:mix", "blob"))
		if p == lp { // LongPoll is text only: binary payloads come as {"base64": …}
			if !strings.Contains(string(e.Payload), base64.StdEncoding.EncodeToString(blob)) {
				t.Fatalf("longpoll blob %.80s…", e.Payload)
			}
			continue
		}
		if !e.Binary || !bytes.Equal(e.Bytes(), blob) {
			t.Fatalf("%s: blob binary %v, %d bytes", name, e.Binary, len(e.Bytes()))
		}
	}

	frames, exts := wl.snapshot()
	wl.mu.Lock()
	gzipped := wl.gzipped
	wl.mu.Unlock()
	if gzipped == 0 {
		t.Fatal("no LongPoll answer was gzipped")
	}
	zc, pc := -1, -1
	for _, f := range frames {
		if ext, ok := exts[f.conn]; ok && strings.Contains(ext, "permessage-deflate") {
			zc = f.conn
		} else {
			pc = f.conn
		}
	}
	if zc < 0 || pc < 0 || len(exts) != 1 || zc == pc {
		t.Fatalf("want one compressed and one plain connection; extensions %v", exts)
	}
	var zUp, zDownText, zDownBin, plainRSV1 int
	for _, f := range frames {
		switch {
		case f.conn == pc && f.rsv1:
			plainRSV1++
		case f.conn != zc || !f.rsv1:
		case f.fromClient:
			zUp++
		case f.op == 1 && f.n < len(textP):
			zDownText++
		case f.op == 2 && f.n < len(blob):
			zDownBin++
		}
	}
	t.Logf("compressing client: %d compressed pushes, %d compressed text and %d binary broadcasts; plain client: %d RSV1 frames; LongPoll: %d gzipped answers", zUp, zDownText, zDownBin, plainRSV1, gzipped)
	if zUp < 2 || zDownText < 2 || zDownBin < 1 || plainRSV1 != 0 {
		t.Fatalf("frames %+v", frames)
	}
}
