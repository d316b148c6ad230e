package serverapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fabric-rt/fabric/publisher"
	fabricv1 "github.com/fabric-rt/fabric/schema/gen/fabricv1"
	"github.com/fabric-rt/fabric/schema/gen/fabricv1/fabricv1connect"
)

// RESTPaths maps each REST path to its RPC. POST a protojson body, get a
// protojson answer; errors are Connect's {"code","message"} with its HTTP
// status (401, 403, 400, 429, 501, 503…). /api/v1/publish and
// /api/v1/publish/batch are the publisher package's Handler, unchanged.
var RESTPaths = map[string]string{
	"/api/v1/broadcast":      fabricv1connect.ServerAPIBroadcastProcedure,
	"/api/v1/presence":       fabricv1connect.ServerAPIPresenceProcedure,
	"/api/v1/presence/stats": fabricv1connect.ServerAPIPresenceStatsProcedure,
	"/api/v1/history":        fabricv1connect.ServerAPIHistoryProcedure,
	"/api/v1/channels":       fabricv1connect.ServerAPIChannelsProcedure,
	"/api/v1/disconnect":     fabricv1connect.ServerAPIDisconnectProcedure,
	"/api/v1/unsubscribe":    fabricv1connect.ServerAPIUnsubscribeProcedure,
	"/api/v1/revoke":         fabricv1connect.ServerAPIRevokeProcedure,
	"/api/v1/channel/clear":  fabricv1connect.ServerAPIClearChannelProcedure,
	"/api/v1/message/remove": fabricv1connect.ServerAPIRemoveMessageProcedure,
	"/api/v1/info":           fabricv1connect.ServerAPIInfoProcedure,
}

// maxBody bounds a request body, as the REST publish endpoint.
const maxBody = publisher.DefaultMaxBody

// Mount registers the service (gRPC, gRPC-Web, Connect), the REST paths,
// gRPC health and reflection on mux.
func (s *Server) Mount(mux *http.ServeMux) {
	opts := []connect.HandlerOption{
		connect.WithCodec(jsonCodec{"json"}),
		connect.WithCodec(jsonCodec{"json; charset=utf-8"}),
		connect.WithReadMaxBytes(maxBody),
	}
	path, h := fabricv1connect.NewServerAPIHandler(s, opts...)
	mux.Handle(path, h)
	for rest, proc := range RESTPaths {
		mux.Handle(rest, restHandler(proc, h))
	}
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(fabricv1connect.ServerAPIName)))
	reflector := grpcreflect.NewStaticReflector(fabricv1connect.ServerAPIName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
}

// restHandler serves a REST path as the Connect unary call it is: a POST
// of JSON to the procedure's path.
func restHandler(proc string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMethodNotAllowed)
			_, _ = w.Write([]byte(`{"code":"unimplemented","message":"use POST"}`))
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" || strings.HasPrefix(ct, "application/x-www-form-urlencoded") { // curl -d's default
			r.Header.Set("Content-Type", "application/json")
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path, r2.URL.RawPath = proc, ""
		r2.RequestURI = proc
		h.ServeHTTP(w, r2)
	})
}

// AuthorizePublish is publisher.HandlerConfig.Authorize for the REST
// publish endpoints: the same credentials and publish scope as Publish.
func (s *Server) AuthorizePublish(r *http.Request, topics []string) error {
	p, err := s.cfg.Credentials.Authenticate(r.Context(), r.Header)
	switch {
	case errors.Is(err, ErrRateLimited):
		return publisher.ErrRateLimited
	case errors.Is(err, ErrNotPublisher):
		return publisher.ErrForbidden
	case err != nil:
		return publisher.ErrUnauthenticated
	}
	if err := p.check(needPublish, topics...); err != nil {
		return fmt.Errorf("%w: %s", publisher.ErrForbidden, strings.TrimPrefix(err.Error(), ErrForbidden.Error()+": "))
	}
	return nil
}

// jsonCodec is Connect's JSON codec with two changes: a publish body may
// give its payload as a JSON value in "data" (publisher.ExtractData, byte
// exact), and answers use the proto field names with every field present,
// as the REST publish endpoint does.
type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }

var marshalOpts = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func (c jsonCodec) Marshal(m any) ([]byte, error) {
	pm, ok := m.(proto.Message)
	if !ok {
		return nil, errors.New("not a proto message")
	}
	return marshalOpts.Marshal(pm)
}

func (c jsonCodec) Unmarshal(b []byte, m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errors.New("not a proto message")
	}
	if len(b) == 0 {
		proto.Reset(pm)
		return nil
	}
	switch msg := pm.(type) {
	case *fabricv1.PublishRequest:
		rest, data, err := publisher.ExtractData(b)
		if err != nil {
			return err
		}
		if err := protojson.Unmarshal(rest, msg); err != nil {
			return err
		}
		if data != nil {
			msg.Payload = data
		}
		return nil
	case *fabricv1.BroadcastRequest:
		rest, data, err := publisher.ExtractData(b)
		if err != nil {
			return err
		}
		if err := protojson.Unmarshal(rest, msg); err != nil {
			return err
		}
		if data != nil {
			msg.Payload = data
		}
		return nil
	case *fabricv1.PublishBatchRequest:
		rest, datas, err := publisher.ExtractBatchData(b)
		if err != nil {
			return err
		}
		if err := protojson.Unmarshal(rest, msg); err != nil {
			return err
		}
		for i, d := range datas {
			if d != nil && i < len(msg.Messages) {
				msg.Messages[i].Payload = d
			}
		}
		return nil
	}
	return protojson.Unmarshal(b, pm)
}

// AuthenticatePublish is publisher.HandlerConfig.Authenticate: the caller
// is known (a key, a publisher JWT; a client token is 403). The scope and
// the rate are checked by AuthorizePublish once the topics are known.
func (s *Server) AuthenticatePublish(r *http.Request) error {
	_, err := s.cfg.Credentials.identify(r.Context(), r.Header)
	switch {
	case errors.Is(err, ErrNotPublisher):
		return publisher.ErrForbidden
	case err != nil:
		return publisher.ErrUnauthenticated
	}
	return nil
}
