package main

import (
	"context"
	"strings"
	"testing"
)

// Leaf-node settings that cannot work stop `fabric serve` with the flag to
// fix, and the start line shows no leaf credentials.
func TestServeLeafNodeFlags(t *testing.T) {
	const urlPass, flagPass = "leaf-url-password-4801", "leaf-flag-password-4802"
	dir := t.TempDir()
	base := []string{"--listen", "127.0.0.1:0", "--ops-listen", "off", "--nats-listen", "off", "--data-dir", dir, "--log-format", "json"}
	for _, tc := range []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"persistent namespace without a home", []string{"--leafnode-remote", "nats-leaf://leaf:" + urlPass + "@127.0.0.1:1"}, nil, "--history-domain"},
		{"password from the environment", []string{"--leafnode-remote", "127.0.0.1:1", "--leafnode-user", "leaf"},
			[]string{"FABRIC_LEAFNODE_PASSWORD=" + flagPass}, "--history-domain"},
		{"with an external NATS", []string{"--leafnode-remote", "127.0.0.1:1", "--nats-url", "nats://127.0.0.1:1"}, nil, "--nats-url"},
		{"credentials without a remote", []string{"--leafnode-creds", "x.creds"}, nil, "need --leafnode-remote"},
		{"domain with an external NATS", []string{"--jetstream-domain", "eu", "--nats-url", "nats://127.0.0.1:1"}, nil, "--jetstream-domain"},
		{"user twice", []string{"--leafnode-remote", "nats-leaf://a:" + urlPass + "@127.0.0.1:1", "--leafnode-user", "b", "--history-domain", "hub"}, nil, "user given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			err := serve(context.Background(), append(append([]string{}, base...), tc.args...), append(tc.environ, "FABRIC_LOG_LEVEL=info"), &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q", err, tc.want)
			}
			logged := errb.String() + out.String() + err.Error()
			for _, s := range []string{urlPass, flagPass} {
				if strings.Contains(logged, s) {
					t.Errorf("a leaf password is in the output:\n%s", logged)
				}
			}
		})
	}
}
