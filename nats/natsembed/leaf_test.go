package natsembed_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

// A leaf server joins a hub: core messages cross the link both ways, and
// the hub's JetStream is reached from the leaf through the hub's domain
// while the plain JetStream API stays local to each side.
func TestLeafNodeJoinsHub(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "hub.conf")
	// The hub authenticates leaf nodes as a user of its one account.
	if err := os.WriteFile(conf, []byte(`authorization { users [ {user: app, password: apppw}, {user: leaf, password: leafpw} ] }`), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := start(t, natsembed.Config{Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "hub"),
		JetStreamDomain: "hub", LeafNodeListen: "127.0.0.1:0", ConfigFile: conf, ServerName: "hub"})
	lu := hub.LeafURL()
	if !strings.HasPrefix(lu, "nats-leaf://127.0.0.1:") || strings.HasSuffix(lu, ":0") {
		t.Fatalf("LeafURL = %q", lu)
	}
	leaf := start(t, natsembed.Config{DontListen: true, JetStream: true, StoreDir: filepath.Join(dir, "leaf"), ServerName: "eu.1",
		LeafRemotes: []natsembed.LeafRemote{{URLs: []string{strings.TrimPrefix(lu, "nats-leaf://")}, User: "leaf", Password: "leafpw"}}})
	if d := leaf.JetStreamDomain(); d != "eu_1" {
		t.Fatalf("derived leaf domain %q, want eu_1 (from the server name)", d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for hub.NATS().NumLeafNodes() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("leaf did not connect to the hub")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hc, err := nats.Connect(hub.ClientURL(), nats.UserInfo("app", "apppw"))
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	lc, err := nats.Connect("", leaf.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()

	// Hub to leaf: interest crosses the link, then the message does.
	sub, err := lc.SubscribeSync("fabric.chat.x")
	if err != nil {
		t.Fatal(err)
	}
	lc.Flush()
	got := false
	for i := 0; i < 100 && !got; i++ {
		hc.Publish("fabric.chat.x", []byte("hi"))
		if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
			got = true
		}
	}
	if !got {
		t.Fatal("a hub publish never reached the leaf subscriber")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A stream created from the leaf through the hub's domain lives in the hub.
	hubJS, err := jetstream.NewWithDomain(lc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hubJS.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatalf("create through the hub domain: %v", err)
	}
	local, err := jetstream.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := local.Stream(ctx, "S"); err != nil {
		t.Fatalf("the stream is not in the hub: %v", err)
	}
	leafJS, err := jetstream.New(lc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leafJS.Stream(ctx, "S"); err == nil {
		t.Fatal("the leaf's own JetStream API answered for the hub's stream: $JS.API crossed the link")
	}
	// A publish on the leaf is stored in the hub and acknowledged.
	ack, err := hubJS.Publish(ctx, "s.1", []byte("x"))
	if err != nil || ack.Domain != "hub" || ack.Sequence != 1 {
		t.Fatalf("publish from the leaf: %+v %v", ack, err)
	}
}

func TestLeafConfigErrors(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "leaf.conf")
	os.WriteFile(conf, []byte("leafnodes { listen: 127.0.0.1:-1 }\njetstream { domain: x }\n"), 0o600)
	seed := filepath.Join(dir, "acct.nk")
	kp, _ := nkeys.CreateAccount()
	s, _ := kp.Seed()
	os.WriteFile(seed, s, 0o600)
	for _, tc := range []struct {
		cfg  natsembed.Config
		want string
	}{
		{natsembed.Config{DontListen: true, LeafNodeListen: "127.0.0.1:0", ConfigFile: conf}, "leaf-node listener given twice"},
		{natsembed.Config{DontListen: true, JetStreamDomain: "y", ConfigFile: conf}, "JetStream domain given twice"},
		{natsembed.Config{DontListen: true, JetStreamDomain: "a.b"}, "bad JetStream domain"},
		{natsembed.Config{DontListen: true, LeafNodeListen: "127.0.0.1"}, "leaf-node listen"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{}}}, "without a URL"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"http://h:1"}}}}, "bad leaf remote scheme"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"nats-leaf://u:secret@h"}}}}, "bad leaf remote"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"u:p@h:1"}, User: "v"}}}, "user given twice"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"h:1"}, User: "v", Credentials: "c"}}}, "give one of"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"h:1"}, Password: "p"}}}, "needs a user"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"h:1"}, Credentials: filepath.Join(dir, "none.creds")}}}, "none.creds"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"h:1"}, NkeySeedFile: seed}}}, "not a user seed"},
		{natsembed.Config{DontListen: true, LeafRemotes: []natsembed.LeafRemote{{URLs: []string{"h:1"}, TLSCA: conf}}}, "no PEM certificate"},
	} {
		s, err := natsembed.Start(tc.cfg)
		if err == nil {
			s.Shutdown()
			t.Errorf("%+v started", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("error shows a password: %v", err)
		}
	}
}

// A leaf-node listener off loopback is reported, open without any
// authorization and authenticated with the client users.
func TestListenersLeafNode(t *testing.T) {
	ls, err := natsembed.Listeners(natsembed.Config{DontListen: true, LeafNodeListen: "0.0.0.0:7422"})
	if err != nil || len(ls) != 1 || ls[0].Kind != natsembed.KindLeafNode || ls[0].Authenticated || ls[0].Loopback() {
		t.Fatalf("open leaf listener: %+v %v", ls, err)
	}
	conf := filepath.Join(t.TempDir(), "auth.conf")
	os.WriteFile(conf, []byte(`authorization { users [ {user: leaf, password: pw} ] }`), 0o600)
	ls, err = natsembed.Listeners(natsembed.Config{DontListen: true, LeafNodeListen: "0.0.0.0:7422", ConfigFile: conf})
	if err != nil || len(ls) != 1 || !ls[0].Authenticated {
		t.Fatalf("leaf listener with users: %+v %v", ls, err)
	}
}
