package serverapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/fabric-rt/fabric/gateway/control"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
)

// rpcServer is a Server with one admin key whose audit log is in the buffer.
func rpcServer(t *testing.T) (*Server, *bytes.Buffer) {
	t.Helper()
	creds, err := NewCredentials(CredentialsConfig{Keys: []KeySpec{{Name: "ops", Key: "ops-key-0123456789", Admin: true}}})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&log, nil))
	return &Server{cfg: Config{Credentials: creds, Audit: NewAuditor(nil, "fabric", logger), Timeout: time.Minute}, log: logger}, &log
}

func infoRequest(key string) *connect.Request[fabricv1.InfoRequest] {
	req := connect.NewRequest(&fabricv1.InfoRequest{})
	req.Header().Set("Authorization", "Bearer "+key)
	return req
}

// clusterRPC.run keeps every RPC's order: authorize, check, backend
// configured, call, audit, error mapping; a step that fails stops the rest.
func TestClusterRPCSteps(t *testing.T) {
	type result struct {
		code           connect.Code // 0: success
		checked, calls int
		audit          string // "" when nothing was recorded
	}
	for _, tc := range []struct {
		name       string
		key        string
		check      error
		configured bool
		callErr    error
		errs       func(error) error
		want       result
	}{
		{name: "unknown key", key: "wrong-key-0123456789", configured: true,
			want: result{code: connect.CodeUnauthenticated}},
		{name: "invalid request", key: "ops-key-0123456789", check: invalid("user is required"), configured: true,
			want: result{code: connect.CodeInvalidArgument, checked: 1}},
		{name: "no backend", key: "ops-key-0123456789",
			want: result{code: connect.CodeUnimplemented, checked: 1}},
		{name: "deadline", key: "ops-key-0123456789", configured: true, callErr: fmt.Errorf("bus: %w", context.DeadlineExceeded),
			want: result{code: connect.CodeDeadlineExceeded, checked: 1, calls: 1, audit: "ok=false"}},
		{name: "moderation error", key: "ops-key-0123456789", configured: true, callErr: fmt.Errorf("topic: %w", control.ErrNotFound), errs: moderationError,
			want: result{code: connect.CodeNotFound, checked: 1, calls: 1, audit: "ok=false"}},
		{name: "success", key: "ops-key-0123456789", configured: true,
			want: result{checked: 1, calls: 1, audit: "ok=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, log := rpcServer(t)
			var got result
			resp, err := clusterRPC[fabricv1.InfoRequest, fabricv1.InfoResponse]{
				name: "Probe", need: needAdmin,
				check:      func(p *Principal) error { got.checked++; return tc.check },
				configured: tc.configured, backend: "probe backend",
				audit: map[string]any{"user": "u1"},
				call: func(ctx context.Context) (*fabricv1.InfoResponse, int, error) {
					got.calls++
					if _, ok := ctx.Deadline(); !ok {
						t.Error("the backend is called without a deadline")
					}
					return &fabricv1.InfoResponse{Nats: &fabricv1.NATSInfo{ClusterName: "c1"}}, 3, tc.callErr
				},
				errs: tc.errs,
			}.run(context.Background(), s, infoRequest(tc.key))
			if err != nil {
				got.code = connect.CodeOf(err)
			} else if resp.Msg.GetNats().GetClusterName() != "c1" {
				t.Errorf("response %v is not the backend's", resp.Msg)
			}
			if tc.want.code == connect.CodeUnimplemented && !strings.Contains(err.Error(), "Probe is not available on this gateway (no probe backend configured)") {
				t.Errorf("Unimplemented error %q does not name the RPC and its backend", err)
			}
			if strings.Contains(log.String(), "msg=audit") {
				got.audit = "ok=false"
				if strings.Contains(log.String(), "ok=true") {
					got.audit = "ok=true"
				}
				for _, want := range []string{"rpc=Probe", "who=key:ops", "affected=3", "map[user:u1]"} {
					if !strings.Contains(log.String(), want) {
						t.Errorf("audit record lacks %s:\n%s", want, log.String())
					}
				}
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// An RPC without audit fields records nothing, success or not.
func TestClusterRPCNotAudited(t *testing.T) {
	s, log := rpcServer(t)
	for _, callErr := range []error{nil, errors.New("bus down")} {
		_, err := clusterRPC[fabricv1.InfoRequest, fabricv1.InfoResponse]{
			name: "Info", need: needAny, configured: true,
			call: func(context.Context) (*fabricv1.InfoResponse, int, error) {
				return &fabricv1.InfoResponse{}, 0, callErr
			},
		}.run(context.Background(), s, infoRequest("ops-key-0123456789"))
		if (callErr == nil) != (err == nil) || (err != nil && connect.CodeOf(err) != connect.CodeUnavailable) {
			t.Fatalf("call error %v answered %v", callErr, err)
		}
	}
	if strings.Contains(log.String(), "audit") {
		t.Fatalf("an unaudited RPC was recorded:\n%s", log.String())
	}
}
