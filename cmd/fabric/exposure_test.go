package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

const exposureSecret = "exposure-test-hs256-secret-32-bytes!"

// With a JWT key, NATS, routes and the ops port off loopback without
// protection refuse to start, whichever of flags, FABRIC_* variables or
// the YAML file sets them, and the error names the flag to add.
func TestServeRefusesOpenNATSAndOps(t *testing.T) {
	dir := t.TempDir()
	usersOnly := filepath.Join(dir, "users.conf")
	if err := os.WriteFile(usersOnly, []byte("authorization { users: [{user: fabric, password: pw}] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yamlFile := func(body string) string {
		p := filepath.Join(t.TempDir(), "fabric.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Only what no case sets from env or file: flags win over both.
	base := []string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "error"}
	cases := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"nats-listen flag", []string{"--jwt-secret", exposureSecret, "--nats-listen", "0.0.0.0:0"}, nil, "--nats-config"},
		{"nats-listen env", nil, []string{"FABRIC_JWT_SECRET=" + exposureSecret, "FABRIC_NATS_LISTEN=0.0.0.0:0"}, "--nats-config"},
		{"nats-listen yaml", []string{"--config", yamlFile("jwt-secret: " + exposureSecret + "\nnats-listen: 0.0.0.0:0\n")}, nil, "--nats-config"},
		{"ops-listen flag", []string{"--jwt-secret", exposureSecret, "--ops-listen", ":0"}, nil, "--allow-remote-ops"},
		{"ops-listen env", nil, []string{"FABRIC_JWT_SECRET=" + exposureSecret, "FABRIC_OPS_LISTEN=0.0.0.0:0"}, "--allow-remote-ops"},
		{"ops-listen yaml", []string{"--config", yamlFile("jwt-secret: " + exposureSecret + "\nops-listen: 0.0.0.0:0\n")}, nil, "--allow-remote-ops"},
		{"cluster-listen flags", []string{"--jwt-secret", exposureSecret, "--nats-config", usersOnly, "--nats-user", "fabric", "--nats-password", "pw",
			"--cluster-name", "c", "--cluster-listen", "0.0.0.0:0"}, nil, "--cluster-listen"},
		{"cluster-listen env", nil, []string{"FABRIC_JWT_SECRET=" + exposureSecret, "FABRIC_NATS_CONFIG=" + usersOnly,
			"FABRIC_CLUSTER_NAME=c", "FABRIC_CLUSTER_LISTEN=0.0.0.0:0"}, "cluster { authorization"},
		{"cluster-listen yaml", []string{"--config", yamlFile("jwt-secret: " + exposureSecret + "\nnats-config: " + usersOnly +
			"\ncluster-name: c\ncluster-listen: 0.0.0.0:0\n")}, nil, "--cluster-listen"},
		// Anonymous mode already refused any non-loopback listener; routes
		// were not among them.
		{"cluster-listen anonymous", []string{"--cluster-name", "c", "--cluster-listen", "0.0.0.0:0"}, nil, "--cluster-listen"},
		{"nats-config with nats-url", []string{"--jwt-secret", exposureSecret, "--nats-config", usersOnly, "--nats-url", "nats://127.0.0.1:1"}, nil, "give one of them"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A case that wrongly starts returns when ctx ends, with nil.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errb syncBuffer
			err := serve(ctx, append(append([]string{}, base...), tc.args...), tc.environ, &out, &errb)
			if !errors.Is(err, app.ErrOpenOnNetwork) && !strings.Contains(tc.want, "give one") {
				t.Fatalf("err = %v, want ErrOpenOnNetwork", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), exposureSecret) {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

// The same settings start once protected: the NATS users come from
// --nats-config (named in the YAML file), the gateway's password from
// FABRIC_NATS_PASSWORD, the ops port off loopback with
// FABRIC_ALLOW_REMOTE_OPS. A NATS client without credentials is refused.
func TestServeWithNATSUsers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { users: [{user: fabric, password: $FABRIC_NATS_PASSWORD}, {user: svc, password: svcpw}] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const gwPassword = "gateway-password-not-in-any-flag"
	t.Setenv("FABRIC_NATS_PASSWORD", gwPassword) // what nats-server reads in the file
	_, port, _ := net.SplitHostPort(proctest.FreeAddrOn(t, "0.0.0.0"))
	natsAddr := "0.0.0.0:" + port
	yml := filepath.Join(dir, "fabric.yaml")
	if err := os.WriteFile(yml, []byte("nats-config: "+conf+"\nnats-user: fabric\nnats-listen: "+natsAddr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--config", yml, "--listen", "127.0.0.1:0", "--ops-listen", "0.0.0.0:0", "--data-dir", dir},
			[]string{"FABRIC_JWT_SECRET=" + exposureSecret, "FABRIC_NATS_PASSWORD=" + gwPassword, "FABRIC_ALLOW_REMOTE_OPS=true", "FABRIC_LOG_LEVEL=warn"},
			&out, &errb)
	}()
	waitServing(t, &out, &errb, done)

	url := "nats://127.0.0.1:" + port
	if nc, err := nats.Connect(url, nats.MaxReconnects(0), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a NATS client without credentials connected")
	}
	nc, err := nats.Connect(url, nats.UserInfo("svc", "svcpw"))
	if err != nil {
		t.Fatalf("service user: %v", err)
	}
	nc.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(errb.String(), gwPassword) {
		t.Fatalf("password logged: %s", errb.String())
	}
}

// With --nats-config requiring users but no credentials for the gateway,
// the error says which flags give them.
func TestServeNATSConfigWithoutGatewayCredentials(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("authorization { users: [{user: svc, password: svcpw}] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb syncBuffer
	err := serve(context.Background(), []string{"--listen", "127.0.0.1:0", "--ops-listen", "off", "--nats-listen", "off",
		"--data-dir", dir, "--nats-config", conf, "--log-level", "error"}, []string{}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "--nats-user") || !strings.Contains(err.Error(), "--nats-nkey") {
		t.Fatalf("err = %v, want it to name the gateway credential flags", err)
	}
}

// `fabric nats` off loopback needs users (--config) or an explicit
// --allow-no-auth; routes need route authorization.
func TestNATSCommandRefusesOpenListeners(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.conf")
	if err := os.WriteFile(users, []byte("authorization { users: [{user: svc, password: pw}] }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string // "" : starts
	}{
		{[]string{"--listen", "0.0.0.0:0"}, "--allow-no-auth"},
		{[]string{"--listen", ":0"}, "give --config"},
		{[]string{"--listen", "0.0.0.0:0", "--config", users, "--cluster-name", "c", "--cluster-listen", "0.0.0.0:0"}, "cluster { authorization"},
		{[]string{"--listen", "0.0.0.0:0", "--config", users}, ""},
		// Leaf nodes from other regions: open off loopback is refused, the
		// client users authorize them, loopback needs nothing.
		{[]string{"--leafnode-listen", "0.0.0.0:0"}, "leafnodes { authorization"},
		{[]string{"--listen", "0.0.0.0:0", "--config", users, "--leafnode-listen", "0.0.0.0:0", "--jetstream-domain", "hub"}, ""},
		{[]string{"--leafnode-listen", "127.0.0.1:0"}, ""},
		{[]string{"--listen", "0.0.0.0:0", "--allow-no-auth"}, ""},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- natsCmd(ctx, append([]string{"--store-dir", t.TempDir(), "--log-level", "error"}, tc.args...), io.Discard, io.Discard)
		}()
		var err error
		select {
		case err = <-done:
		case <-time.After(3 * time.Second): // running: stop it
			cancel()
			err = <-done
			if err == nil {
				err = errStarted
			}
		}
		cancel()
		switch {
		case tc.want == "" && !errors.Is(err, errStarted):
			t.Errorf("%q: %v, want it to start", tc.args, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: %v, want a refusal naming %q", tc.args, err, tc.want)
		}
	}
}

var errStarted = errors.New("started")
