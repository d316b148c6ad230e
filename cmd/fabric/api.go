package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/internal/config"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

// The server API's commands (docs/api.md): each is one RPC over the
// Connect protocol, authenticated with an API key.

// apiCommands are the commands apiCmd serves, with their usage lines.
var apiCommands = map[string]string{
	"presence": "fabric presence [flags] TOPIC",
	"kick":     "fabric kick [flags] USER",
	"revoke":   "fabric revoke [flags] (--jti J | --user U --before T)",
	"history":  "fabric history [flags] TOPIC",
	"channels": "fabric channels [flags] [PATTERN]",
	"info":     "fabric info [flags]",
}

type apiOptions struct {
	url, key string
	timeout  time.Duration
	json     bool
	// per command
	stats          bool
	code           int
	reason         string
	ban            time.Duration
	jti, user      string
	before         string
	ttl            time.Duration
	last           int
	since, epoch   string
	limit          int
	unsubscribeTop string
}

func apiFlags(cmd string, o *apiOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric "+cmd, flag.ContinueOnError)
	fs.StringVar(&o.url, "api-url", "http://127.0.0.1:4000", "base URL of the server API (--listen, or --api-listen of fabric serve)")
	fs.StringVar(&o.key, "api-key", "", "API key, sent as Authorization: Bearer (prefer FABRIC_API_KEY)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up (and fail) after this long")
	fs.BoolVar(&o.json, "json", false, "print the answer as JSON (the protobuf JSON mapping)")
	switch cmd {
	case "presence":
		fs.BoolVar(&o.stats, "stats", false, "only count members and connections (PresenceStats; cheap for large rooms)")
	case "kick":
		fs.IntVar(&o.code, "code", 4001, "WebSocket close code sent to the user's connections (4000-4999)")
		fs.StringVar(&o.reason, "reason", "", "close reason")
		fs.DurationVar(&o.ban, "ban", 0, "refuse the user's reconnects for this long (e.g. 10m)")
		fs.StringVar(&o.unsubscribeTop, "topic", "", "only unsubscribe the user from this topic (Unsubscribe; the client gets phx_close) instead of disconnecting")
	case "revoke":
		fs.StringVar(&o.jti, "jti", "", "revoke the token with this jti")
		fs.StringVar(&o.user, "user", "", "revoke the tokens of this user (sub) issued before --before")
		fs.StringVar(&o.before, "before", "", `with --user: RFC 3339 time, Unix seconds, or "now"`)
		fs.DurationVar(&o.ttl, "ttl", 24*time.Hour, "keep the revocation this long: at least the tokens' lifetime")
	case "history":
		fs.IntVar(&o.last, "last", 20, "the latest N messages (at most 1000)")
		fs.StringVar(&o.since, "since", "", "read forwards from after this offset instead (pages with --limit)")
		fs.StringVar(&o.epoch, "epoch", "", "with --since: the epoch the offset belongs to (default: the current one)")
		fs.IntVar(&o.limit, "limit", 100, "with --since: messages per page (at most 1000)")
	}
	return fs
}

// apiCmd runs one server API command.
func apiCmd(ctx context.Context, cmd string, args, environ []string, stdout, stderr io.Writer) error {
	var o apiOptions
	fs := apiFlags(cmd, &o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\nFlags (each also FABRIC_<NAME>, e.g. FABRIC_API_KEY):\n", apiCommands[cmd])
		fs.PrintDefaults()
	}
	rest, err := config.Load(fs, args, config.Options{EnvPrefix: "FABRIC_", Environ: environ})
	if err != nil {
		return err
	}
	usageErr := func(msg string) error { return &config.UsageError{Command: "fabric " + cmd, Msg: msg} }
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c := fabricv1connect.NewServerAPIClient(http.DefaultClient, strings.TrimRight(o.url, "/"), connect.WithProtoJSON())
	var res proto.Message
	switch cmd {
	case "presence":
		if len(rest) != 1 {
			return usageErr("give one TOPIC")
		}
		if o.stats {
			res, err = call(ctx, o, c.PresenceStats, &fabricv1.PresenceStatsRequest{Topic: rest[0]})
		} else {
			res, err = call(ctx, o, c.Presence, &fabricv1.PresenceRequest{Topic: rest[0]})
		}
	case "kick":
		if len(rest) != 1 {
			return usageErr("give one USER")
		}
		if o.unsubscribeTop != "" {
			res, err = call(ctx, o, c.Unsubscribe, &fabricv1.UnsubscribeUserRequest{User: rest[0], Topic: o.unsubscribeTop})
		} else {
			res, err = call(ctx, o, c.Disconnect, &fabricv1.DisconnectUserRequest{User: rest[0], Code: uint32(o.code),
				Reason: o.reason, BanSeconds: uint64((o.ban + time.Second - 1) / time.Second)})
		}
	case "revoke":
		if len(rest) != 0 {
			return usageErr("revoke takes flags only")
		}
		r := &fabricv1.RevokeRequest{Jti: o.jti, User: o.user, TtlSeconds: uint64(o.ttl / time.Second)}
		switch {
		case (o.jti != "") == (o.user != ""):
			return usageErr("give --jti, or --user with --before")
		case o.user != "":
			t, err := parseBefore(o.before)
			if err != nil {
				return usageErr(err.Error())
			}
			r.IssuedBeforeUnix = t.Unix()
		}
		res, err = call(ctx, o, c.Revoke, r)
	case "history":
		if len(rest) != 1 {
			return usageErr("give one TOPIC")
		}
		r := &fabricv1.HistoryRequest{Topic: rest[0], Limit: uint32(o.last)}
		if o.since != "" {
			off, perr := strconv.ParseUint(o.since, 10, 64)
			if perr != nil {
				return usageErr("--since is an offset (a decimal number)")
			}
			r.Since, r.Limit = &fabricv1.Position{Epoch: o.epoch, Offset: off}, uint32(o.limit)
		}
		res, err = call(ctx, o, c.History, r)
	case "channels":
		if len(rest) > 1 {
			return usageErr("give at most one PATTERN")
		}
		r := &fabricv1.ChannelsRequest{}
		if len(rest) == 1 {
			r.Pattern = rest[0]
		}
		res, err = call(ctx, o, c.Channels, r)
	case "info":
		if len(rest) != 0 {
			return usageErr("info takes flags only")
		}
		res, err = call(ctx, o, c.Info, &fabricv1.InfoRequest{})
	}
	if err != nil {
		return apiError(err)
	}
	if o.json {
		b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true, Multiline: true}.Marshal(res)
		fmt.Fprintln(stdout, string(b))
		return nil
	}
	printAPI(stdout, res)
	return nil
}

func call[Req, Res any](ctx context.Context, o apiOptions, f func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error), m *Req) (proto.Message, error) {
	r := connect.NewRequest(m)
	if o.key != "" {
		r.Header().Set("Authorization", "Bearer "+o.key)
	}
	res, err := f(ctx, r)
	if err != nil {
		return nil, err
	}
	return any(res.Msg).(proto.Message), nil
}

// apiError says what a refusal means, without the key.
func apiError(err error) error {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	hint := ""
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		hint = " (give --api-key or FABRIC_API_KEY)"
	case connect.CodePermissionDenied:
		hint = " (the key's scope does not cover this; docs/api.md#credentials)"
	}
	return fmt.Errorf("%s: %s%s", ce.Code(), ce.Message(), hint)
}

func parseBefore(s string) (time.Time, error) {
	switch s {
	case "":
		return time.Time{}, errors.New("--user needs --before (RFC 3339, Unix seconds or now)")
	case "now":
		return time.Now(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--before %q: RFC 3339 (2026-12-01T18:00:00Z), Unix seconds or now", s)
	}
	return t, nil
}

func coverageLine(w io.Writer, c *fabricv1.Coverage) {
	if c == nil {
		return
	}
	fmt.Fprintf(w, "gateways: %d answered", len(c.GetAnswered()))
	if len(c.GetMissing()) > 0 {
		fmt.Fprintf(w, ", %d did not answer in time: %s", len(c.GetMissing()), strings.Join(c.GetMissing(), ", "))
	}
	fmt.Fprintln(w)
}

// printAPI prints an answer for a person.
func printAPI(w io.Writer, m proto.Message) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch r := m.(type) {
	case *fabricv1.PresenceResponse:
		for _, e := range r.GetEntries() {
			fmt.Fprintf(tw, "%s\t%d connection(s)\t%s\n", e.GetKey(), len(e.GetMetasJson()), strings.Join(e.GetMetasJson(), " "))
		}
		fmt.Fprintf(tw, "%d member(s)\n", len(r.GetEntries()))
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.PresenceStatsResponse:
		fmt.Fprintf(tw, "%s: %d member(s), %d connection(s)\n", r.GetTopic(), r.GetMembers(), r.GetConnections())
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.DisconnectUserResponse:
		fmt.Fprintf(tw, "closed %d connection(s)\n", r.GetClosed())
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.UnsubscribeUserResponse:
		fmt.Fprintf(tw, "closed %d channel(s)\n", r.GetClosed())
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.RevokeResponse:
		fmt.Fprintf(tw, "revoked; closed %d connection(s)\n", r.GetClosed())
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.HistoryResponse:
		if !r.GetRecovered() {
			fmt.Fprintf(tw, "cannot read from there: %s\n", r.GetReason())
			return
		}
		for _, h := range r.GetMessages() {
			p := string(h.GetPayload())
			if h.GetBinary() {
				p = fmt.Sprintf("<%d bytes binary>", len(h.GetPayload()))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", h.GetOffset(), h.GetEvent(), p)
		}
		fmt.Fprintf(tw, "epoch %s, next offset %d, done %v\n", r.GetEpoch(), r.GetNext().GetOffset(), r.GetDone())
	case *fabricv1.ChannelsResponse:
		for _, ch := range r.GetChannels() {
			fmt.Fprintf(tw, "%s\t%d\n", ch.GetTopic(), ch.GetMembers())
		}
		fmt.Fprintf(tw, "%d channel(s)\n", len(r.GetChannels()))
		coverageLine(tw, r.GetCoverage())
	case *fabricv1.InfoResponse:
		for _, g := range r.GetGateways() {
			fmt.Fprintf(tw, "%s\t%s\tup %s\t%d connections\t%d channels\n", g.GetId(), g.GetVersion(),
				time.Duration(g.GetUptimeSeconds())*time.Second, g.GetConnections(), g.GetChannels())
		}
		n := r.GetNats()
		fmt.Fprintf(tw, "NATS cluster %q, JetStream %v\n", n.GetClusterName(), n.GetJetstream())
		coverageLine(tw, r.GetCoverage())
	}
}
