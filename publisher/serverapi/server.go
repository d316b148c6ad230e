package serverapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/publisher"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

// History is what the History RPC reads (nats/natsbroker implements it).
type History interface {
	// HistoryEpoch is the topic's current epoch (false: no history).
	HistoryEpoch(topic string) (string, bool)
	// Replay reads up to max messages after from, checking that none was
	// lost (broker.History).
	Replay(ctx context.Context, topic string, from broker.Position, max int) (broker.Page, error)
	// Latest reads the latest n messages, oldest first.
	Latest(ctx context.Context, topic string, n int) (broker.Page, string, error)
}

// Config configures a Server.
type Config struct {
	// Publisher sends Publish, PublishBatch and Broadcast (required).
	Publisher *publisher.Publisher
	// Credentials authenticate every call (required).
	Credentials *Credentials
	// History serves History; nil: Unimplemented.
	History History
	// Cluster serves Presence, PresenceStats, Channels, Disconnect,
	// Unsubscribe, Revoke and Info; nil: those answer Unimplemented.
	Cluster control.Cluster
	// Moderator serves ClearChannel and RemoveMessage; nil: Unimplemented.
	Moderator control.Moderator
	// Audit records admin RPCs; nil: the log only.
	Audit *Auditor
	// Available, when set, is asked before a publish: an error means NATS
	// is known to be away (Unavailable at once).
	Available func(topic string) error
	// Timeout bounds cluster-wide calls (default 3s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Server implements fabricv1connect.ServerAPIHandler.
type Server struct {
	cfg Config
	log *slog.Logger
}

var _ fabricv1connect.ServerAPIHandler = (*Server)(nil)

// New checks cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("serverapi: Config.Publisher is nil")
	}
	if cfg.Credentials == nil {
		return nil, errors.New("serverapi: Config.Credentials is nil")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Audit == nil {
		cfg.Audit = &Auditor{log: cfg.Logger}
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// authorize authenticates the caller and checks its scope for every topic
// before anything is done.
func (s *Server) authorize(ctx context.Context, h http.Header, n need, topics ...string) (*Principal, error) {
	p, err := s.cfg.Credentials.Authenticate(ctx, h)
	switch {
	case errors.Is(err, ErrRateLimited):
		return nil, connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, ErrNotPublisher):
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	case err != nil:
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	}
	if err := p.check(n, topics...); err != nil {
		return nil, connect.NewError(connect.CodePermissionDenied, err)
	}
	return p, nil
}

func unimplemented(what, field string) error {
	return connect.NewError(connect.CodeUnimplemented,
		fmt.Errorf("%s is not available on this gateway (no %s configured)", what, field))
}

func invalid(format string, a ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, a...))
}

// publishError maps a publisher error to its code.
func publishError(err error) error {
	switch {
	case errors.Is(err, publisher.ErrInvalidTopic), errors.Is(err, publisher.ErrInvalidEvent),
		errors.Is(err, publisher.ErrInvalidOption), errors.Is(err, publisher.ErrTooLarge):
		return connect.NewError(connect.CodeInvalidArgument, err)
	default:
		return connect.NewError(connect.CodeUnavailable, fmt.Errorf("not acknowledged; retry with the same idempotency_key: %w", err))
	}
}

// clusterError maps an error of the Cluster or Moderator: the caller's
// deadline, or the bus.
func clusterError(err error) error {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	default:
		return connect.NewError(connect.CodeUnavailable, err)
	}
}

func (s *Server) available(topics ...string) error {
	if s.cfg.Available == nil {
		return nil
	}
	for _, t := range topics {
		if err := s.cfg.Available(t); err != nil {
			return connect.NewError(connect.CodeUnavailable, err)
		}
	}
	return nil
}

func toResult(r publisher.Result) *fabricv1.PublishResponse {
	return &fabricv1.PublishResponse{Epoch: r.Epoch, Offset: r.Offset, Duplicate: r.Duplicate}
}

// Publish implements ServerAPI.Publish.
func (s *Server) Publish(ctx context.Context, req *connect.Request[fabricv1.PublishRequest]) (*connect.Response[fabricv1.PublishResponse], error) {
	m := req.Msg
	if _, err := s.authorize(ctx, req.Header(), needPublish, m.GetTopic()); err != nil {
		return nil, err
	}
	if err := s.available(m.GetTopic()); err != nil {
		return nil, err
	}
	res, err := s.cfg.Publisher.Publish(ctx, m.GetTopic(), m.GetEvent(), m.GetPayload(), publisher.RequestOptions(m)...)
	if err != nil {
		return nil, publishError(err)
	}
	return connect.NewResponse(toResult(res)), nil
}

// maxBatch bounds PublishBatch and Broadcast, as the REST batch.
const maxBatch = publisher.DefaultMaxBatch

// PublishBatch implements ServerAPI.PublishBatch.
func (s *Server) PublishBatch(ctx context.Context, req *connect.Request[fabricv1.PublishBatchRequest]) (*connect.Response[fabricv1.PublishBatchResponse], error) {
	msgs := req.Msg.GetMessages()
	if len(msgs) > maxBatch {
		return nil, invalid("more than %d messages", maxBatch)
	}
	topics := make([]string, len(msgs))
	all := make([]publisher.Message, len(msgs))
	for i, m := range msgs {
		topics[i] = m.GetTopic()
		all[i] = publisher.Message{Topic: m.GetTopic(), Event: m.GetEvent(), Payload: m.GetPayload(), Options: publisher.RequestOptions(m)}
	}
	if _, err := s.authorize(ctx, req.Header(), needPublish, topics...); err != nil {
		return nil, err
	}
	if err := s.available(topics...); err != nil {
		return nil, err
	}
	results, err := s.cfg.Publisher.PublishAll(ctx, all)
	if err != nil {
		return nil, publishError(err)
	}
	out := &fabricv1.PublishBatchResponse{Results: make([]*fabricv1.PublishResponse, len(results))}
	for i, r := range results {
		out.Results[i] = toResult(r)
	}
	return connect.NewResponse(out), nil
}

// Broadcast implements ServerAPI.Broadcast: every topic is authorized and
// validated before anything is sent; then each topic's outcome is its own.
func (s *Server) Broadcast(ctx context.Context, req *connect.Request[fabricv1.BroadcastRequest]) (*connect.Response[fabricv1.BroadcastResponse], error) {
	m := req.Msg
	if len(m.GetTopics()) == 0 {
		return nil, invalid("topics is empty")
	}
	if len(m.GetTopics()) > maxBatch {
		return nil, invalid("more than %d topics", maxBatch)
	}
	if _, err := s.authorize(ctx, req.Header(), needPublish, m.GetTopics()...); err != nil {
		return nil, err
	}
	if err := s.available(m.GetTopics()...); err != nil {
		return nil, err
	}
	opts := publisher.RequestOptions(&fabricv1.PublishRequest{IdempotencyKey: m.GetIdempotencyKey(),
		ContentType: m.GetContentType(), Headers: m.GetHeaders()})
	results, err := s.cfg.Publisher.Broadcast(ctx, m.GetTopics(), m.GetEvent(), m.GetPayload(), opts...)
	var te *publisher.TopicError
	if err != nil && !errors.As(err, &te) {
		return nil, publishError(err) // nothing was sent (invalid input)
	}
	out := &fabricv1.BroadcastResponse{Results: make([]*fabricv1.BroadcastResult, len(m.GetTopics()))}
	for i, t := range m.GetTopics() {
		r := &fabricv1.BroadcastResult{Topic: t}
		if te != nil && te.Failed[i] != nil {
			var ce *connect.Error
			errors.As(publishError(te.Failed[i]), &ce)
			r.Error, r.Message = ce.Code().String(), te.Failed[i].Error()
		} else {
			r.Result = toResult(results[i])
		}
		out.Results[i] = r
	}
	return connect.NewResponse(out), nil
}

func coverage(c control.Coverage) *fabricv1.Coverage {
	return &fabricv1.Coverage{Answered: c.Answered, Missing: c.Missing}
}

func (s *Server) clusterCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.Timeout)
}

func requireTopic(t string) error {
	if t == "" {
		return invalid("topic is required")
	}
	return nil
}

// Presence implements ServerAPI.Presence.
func (s *Server) Presence(ctx context.Context, req *connect.Request[fabricv1.PresenceRequest]) (*connect.Response[fabricv1.PresenceResponse], error) {
	t := req.Msg.GetTopic()
	return clusterRPC[fabricv1.PresenceRequest, fabricv1.PresenceResponse]{
		name: "Presence", need: needPresence, topics: []string{t},
		check:      func(*Principal) error { return requireTopic(t) },
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		call: func(ctx context.Context) (*fabricv1.PresenceResponse, int, error) {
			res, err := s.cfg.Cluster.Presence(ctx, t)
			if err != nil {
				return nil, 0, err
			}
			out := &fabricv1.PresenceResponse{Topic: t, Coverage: coverage(res.Coverage)}
			for _, e := range res.Entries {
				pe := &fabricv1.PresenceEntry{Key: e.Key, MetasJson: make([]string, len(e.Metas))}
				for i, m := range e.Metas {
					pe.MetasJson[i] = string(m)
				}
				out.Entries = append(out.Entries, pe)
			}
			return out, 0, nil
		},
	}.run(ctx, s, req)
}

// PresenceStats implements ServerAPI.PresenceStats.
func (s *Server) PresenceStats(ctx context.Context, req *connect.Request[fabricv1.PresenceStatsRequest]) (*connect.Response[fabricv1.PresenceStatsResponse], error) {
	t := req.Msg.GetTopic()
	return clusterRPC[fabricv1.PresenceStatsRequest, fabricv1.PresenceStatsResponse]{
		name: "PresenceStats", need: needPresence, topics: []string{t},
		check:      func(*Principal) error { return requireTopic(t) },
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		call: func(ctx context.Context) (*fabricv1.PresenceStatsResponse, int, error) {
			res, err := s.cfg.Cluster.PresenceStats(ctx, t)
			if err != nil {
				return nil, 0, err
			}
			return &fabricv1.PresenceStatsResponse{Topic: t, Members: uint32(res.Members),
				Connections: uint32(res.Connections), Coverage: coverage(res.Coverage)}, 0, nil
		},
	}.run(ctx, s, req)
}

// Channels implements ServerAPI.Channels.
func (s *Server) Channels(ctx context.Context, req *connect.Request[fabricv1.ChannelsRequest]) (*connect.Response[fabricv1.ChannelsResponse], error) {
	pat := req.Msg.GetPattern()
	if pat == "" {
		pat = ">"
	}
	return clusterRPC[fabricv1.ChannelsRequest, fabricv1.ChannelsResponse]{
		name: "Channels", need: needAny,
		check: func(p *Principal) error {
			if !covers(p.Scope.Presence, pat) {
				return connect.NewError(connect.CodePermissionDenied,
					fmt.Errorf("%w: %s may not list %q (every topic it matches must be in its presence scope)", ErrForbidden, p.Name, pat))
			}
			return nil
		},
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		call: func(ctx context.Context) (*fabricv1.ChannelsResponse, int, error) {
			res, err := s.cfg.Cluster.Channels(ctx, pat)
			if err != nil {
				return nil, 0, err
			}
			out := &fabricv1.ChannelsResponse{Coverage: coverage(res.Coverage)}
			for _, c := range res.Channels {
				out.Channels = append(out.Channels, &fabricv1.ChannelInfo{Topic: c.Topic, Members: uint32(c.Members)})
			}
			return out, 0, nil
		},
	}.run(ctx, s, req)
}

// History limits.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
)

// History implements ServerAPI.History.
func (s *Server) History(ctx context.Context, req *connect.Request[fabricv1.HistoryRequest]) (*connect.Response[fabricv1.HistoryResponse], error) {
	m := req.Msg
	t := m.GetTopic()
	limit := int(m.GetLimit())
	if limit == 0 {
		limit = defaultHistoryLimit
	}
	return clusterRPC[fabricv1.HistoryRequest, fabricv1.HistoryResponse]{
		name: "History", need: needHistory, topics: []string{t},
		check: func(*Principal) error {
			if err := requireTopic(t); err != nil {
				return err
			}
			// Without a reader the answer is Unimplemented, whatever the limit.
			if s.cfg.History != nil && limit > maxHistoryLimit {
				return invalid("limit is at most %d", maxHistoryLimit)
			}
			return nil
		},
		configured: s.cfg.History != nil, backend: "history reader",
		call: func(ctx context.Context) (*fabricv1.HistoryResponse, int, error) {
			out, err := s.history(ctx, t, m.GetSince(), limit)
			return out, 0, err
		},
	}.run(ctx, s, req)
}

// history reads one page of t's history from since (nil: the latest
// limit messages).
func (s *Server) history(ctx context.Context, t string, since *fabricv1.Position, limit int) (*fabricv1.HistoryResponse, error) {
	epoch, ok := s.cfg.History.HistoryEpoch(t)
	if !ok {
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("topic %q keeps no history (its namespace is not persistent)", t))
	}
	out := &fabricv1.HistoryResponse{Topic: t, Epoch: epoch, Recovered: true}
	var page broker.Page
	var err error
	if since == nil {
		page, out.Epoch, err = s.cfg.History.Latest(ctx, t, limit)
		since = &fabricv1.Position{Epoch: out.Epoch}
	} else {
		if since.GetEpoch() == "" {
			since = &fabricv1.Position{Epoch: epoch, Offset: since.GetOffset()}
		}
		page, err = s.cfg.History.Replay(ctx, t, broker.Position{Epoch: since.GetEpoch(), Offset: since.GetOffset()}, limit)
	}
	if err != nil {
		return nil, err
	}
	out.Next = &fabricv1.Position{Epoch: out.Epoch, Offset: since.GetOffset()}
	if page.Reason != "" {
		out.Recovered, out.Reason = false, page.Reason
		out.Next = since
		return out, nil
	}
	out.Done = page.Done
	out.Messages = make([]*fabricv1.HistoryMessage, len(page.Messages))
	for i, bm := range page.Messages {
		out.Messages[i] = &fabricv1.HistoryMessage{Event: bm.Event, Payload: bm.Payload, Binary: bm.Binary, Offset: bm.Offset, Prev: bm.Prev}
		out.Next.Offset = bm.Offset
	}
	return out, nil
}

// maxBan bounds a Disconnect's ban.
const maxBan = 30 * 24 * time.Hour

// Disconnect implements ServerAPI.Disconnect.
func (s *Server) Disconnect(ctx context.Context, req *connect.Request[fabricv1.DisconnectUserRequest]) (*connect.Response[fabricv1.DisconnectUserResponse], error) {
	m := req.Msg
	// 0 leaves the code to the gateways: 4010 "disconnected", or 4011
	// "banned" with a ban (docs/cluster-control.md).
	code := int(m.GetCode())
	ban := time.Duration(m.GetBanSeconds()) * time.Second
	return clusterRPC[fabricv1.DisconnectUserRequest, fabricv1.DisconnectUserResponse]{
		name: "Disconnect", need: needAdmin,
		check: func(*Principal) error {
			switch {
			case m.GetUser() == "":
				return invalid("user is required")
			case code != 0 && (code < 4000 || code > 4999):
				return invalid("code must be 4000-4999 (application close codes)")
			case len(m.GetReason()) > 123:
				return invalid("reason is at most 123 bytes (a close frame's limit)")
			case ban > maxBan:
				return invalid("ban is at most %s", maxBan)
			}
			return nil
		},
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		audit: map[string]any{"user": m.GetUser(), "code": code, "reason": m.GetReason(), "ban_seconds": m.GetBanSeconds()},
		call: func(ctx context.Context) (*fabricv1.DisconnectUserResponse, int, error) {
			res, err := s.cfg.Cluster.Disconnect(ctx, control.DisconnectRequest{User: m.GetUser(), Code: code, Reason: m.GetReason(), Ban: ban})
			return &fabricv1.DisconnectUserResponse{Closed: uint32(res.Count), Coverage: coverage(res.Coverage)}, res.Count, err
		},
	}.run(ctx, s, req)
}

// Unsubscribe implements ServerAPI.Unsubscribe.
func (s *Server) Unsubscribe(ctx context.Context, req *connect.Request[fabricv1.UnsubscribeUserRequest]) (*connect.Response[fabricv1.UnsubscribeUserResponse], error) {
	m := req.Msg
	return clusterRPC[fabricv1.UnsubscribeUserRequest, fabricv1.UnsubscribeUserResponse]{
		name: "Unsubscribe", need: needAdmin,
		check: func(*Principal) error {
			if m.GetUser() == "" || m.GetTopic() == "" {
				return invalid("user and topic are required")
			}
			return nil
		},
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		audit: map[string]any{"user": m.GetUser(), "topic": m.GetTopic()},
		call: func(ctx context.Context) (*fabricv1.UnsubscribeUserResponse, int, error) {
			res, err := s.cfg.Cluster.Unsubscribe(ctx, control.UnsubscribeRequest{User: m.GetUser(), Topic: m.GetTopic()})
			return &fabricv1.UnsubscribeUserResponse{Closed: uint32(res.Count), Coverage: coverage(res.Coverage)}, res.Count, err
		},
	}.run(ctx, s, req)
}

// Revoke defaults.
const (
	defaultRevokeTTL = 24 * time.Hour
	maxRevokeTTL     = 366 * 24 * time.Hour
)

// Revoke implements ServerAPI.Revoke.
func (s *Server) Revoke(ctx context.Context, req *connect.Request[fabricv1.RevokeRequest]) (*connect.Response[fabricv1.RevokeResponse], error) {
	m := req.Msg
	byJTI, byUser := m.GetJti() != "", m.GetUser() != "" || m.GetIssuedBeforeUnix() != 0
	ttl := time.Duration(m.GetTtlSeconds()) * time.Second
	if ttl == 0 {
		ttl = defaultRevokeTTL
	}
	r := control.RevokeRequest{JTI: m.GetJti(), User: m.GetUser(), Until: time.Now().Add(ttl)}
	if byUser {
		r.IssuedBefore = time.Unix(m.GetIssuedBeforeUnix(), 0)
	}
	return clusterRPC[fabricv1.RevokeRequest, fabricv1.RevokeResponse]{
		name: "Revoke", need: needAdmin,
		check: func(*Principal) error {
			switch {
			case byJTI == byUser:
				return invalid("give jti, or user with issued_before_unix (not both)")
			case byUser && (m.GetUser() == "" || m.GetIssuedBeforeUnix() <= 0):
				return invalid("user and issued_before_unix are both required")
			case ttl > maxRevokeTTL:
				return invalid("ttl_seconds is at most %d", int64(maxRevokeTTL/time.Second))
			}
			return nil
		},
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		audit: map[string]any{"jti": m.GetJti(), "user": m.GetUser(),
			"issued_before_unix": m.GetIssuedBeforeUnix(), "until": r.Until.UTC().Format(time.RFC3339)},
		call: func(ctx context.Context) (*fabricv1.RevokeResponse, int, error) {
			res, err := s.cfg.Cluster.Revoke(ctx, r)
			return &fabricv1.RevokeResponse{Closed: uint32(res.Count), Coverage: coverage(res.Coverage)}, res.Count, err
		},
	}.run(ctx, s, req)
}

// ClearChannel implements ServerAPI.ClearChannel.
func (s *Server) ClearChannel(ctx context.Context, req *connect.Request[fabricv1.ClearChannelRequest]) (*connect.Response[fabricv1.ClearChannelResponse], error) {
	t := req.Msg.GetTopic()
	return clusterRPC[fabricv1.ClearChannelRequest, fabricv1.ClearChannelResponse]{
		name: "ClearChannel", need: needAdmin,
		check:      func(*Principal) error { return requireTopic(t) },
		configured: s.cfg.Moderator != nil, backend: "history moderator",
		audit: map[string]any{"topic": t},
		call: func(ctx context.Context) (*fabricv1.ClearChannelResponse, int, error) {
			return &fabricv1.ClearChannelResponse{}, 0, s.cfg.Moderator.ClearChannel(ctx, t)
		},
		errs: moderationError,
	}.run(ctx, s, req)
}

// RemoveMessage implements ServerAPI.RemoveMessage.
func (s *Server) RemoveMessage(ctx context.Context, req *connect.Request[fabricv1.RemoveMessageRequest]) (*connect.Response[fabricv1.RemoveMessageResponse], error) {
	t, off := req.Msg.GetTopic(), req.Msg.GetOffset()
	return clusterRPC[fabricv1.RemoveMessageRequest, fabricv1.RemoveMessageResponse]{
		name: "RemoveMessage", need: needAdmin,
		check: func(*Principal) error {
			if err := requireTopic(t); err != nil {
				return err
			}
			if off == 0 {
				return invalid("offset is required")
			}
			return nil
		},
		configured: s.cfg.Moderator != nil, backend: "history moderator",
		audit: map[string]any{"topic": t, "offset": off},
		call: func(ctx context.Context) (*fabricv1.RemoveMessageResponse, int, error) {
			return &fabricv1.RemoveMessageResponse{}, 0, s.cfg.Moderator.RemoveMessage(ctx, t, off)
		},
		errs: moderationError,
	}.run(ctx, s, req)
}

// moderationError: an unknown topic or offset is the caller's, the rest as
// for cluster calls.
func moderationError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, control.ErrNotFound), strings.Contains(msg, "no such"):
		return connect.NewError(connect.CodeNotFound, err)
	case strings.Contains(msg, "no history"), strings.Contains(msg, "invalid"):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	}
	return clusterError(err)
}

// Info implements ServerAPI.Info.
func (s *Server) Info(ctx context.Context, req *connect.Request[fabricv1.InfoRequest]) (*connect.Response[fabricv1.InfoResponse], error) {
	return clusterRPC[fabricv1.InfoRequest, fabricv1.InfoResponse]{
		name: "Info", need: needAny,
		configured: s.cfg.Cluster != nil, backend: "cluster control",
		call: func(ctx context.Context) (*fabricv1.InfoResponse, int, error) {
			res, err := s.cfg.Cluster.Info(ctx)
			if err != nil {
				return nil, 0, err
			}
			out := &fabricv1.InfoResponse{Coverage: coverage(res.Coverage), Nats: &fabricv1.NATSInfo{ClusterName: res.NATS.ClusterName,
				Servers: res.NATS.Servers, Jetstream: res.NATS.JetStream, JetstreamDomain: res.NATS.JetStreamDomain}}
			for _, g := range res.Gateways {
				out.Gateways = append(out.Gateways, &fabricv1.GatewayInfo{Id: g.ID, Version: g.Version,
					UptimeSeconds: uint64(g.Uptime / time.Second), Connections: uint32(g.Connections), Channels: uint32(g.Channels)})
			}
			return out, 0, nil
		},
	}.run(ctx, s, req)
}
