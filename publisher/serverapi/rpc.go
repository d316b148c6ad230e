package serverapi

import (
	"context"

	"connectrpc.com/connect"
)

// clusterRPC is one RPC served by a backend the gateway may lack (Cluster,
// Moderator, History). Every such RPC runs the same steps, in run's order.
type clusterRPC[Req, Res any] struct {
	name   string   // the RPC, as Unimplemented errors and audit records name it
	need   need     // the scope the caller needs...
	topics []string // ...for each of these topics (none: the scope alone)
	// check validates the request once the caller is known; nil: nothing to check.
	check func(p *Principal) error
	// configured: the backend is set; else Unimplemented naming backend
	// (the missing Config field, e.g. "cluster control").
	configured bool
	backend    string
	// audit holds an admin RPC's record fields; nil: the RPC is not audited.
	audit map[string]any
	// call asks the backend: the answer, and how many connections it
	// affected (for the audit record).
	call func(ctx context.Context) (*Res, int, error)
	// errs maps call's error to a code; nil: clusterError.
	errs func(error) error
}

// run authorizes the caller before anything is read or checked (a stranger
// learns nothing about the request), validates the request, answers
// Unimplemented without a backend, calls it under the cluster deadline,
// records an audited call whether or not it succeeded, and maps the error.
func (r clusterRPC[Req, Res]) run(ctx context.Context, s *Server, req *connect.Request[Req]) (*connect.Response[Res], error) {
	p, err := s.authorize(ctx, req.Header(), r.need, r.topics...)
	if err != nil {
		return nil, err
	}
	if r.check != nil {
		if err := r.check(p); err != nil {
			return nil, err
		}
	}
	if !r.configured {
		return nil, unimplemented(r.name, r.backend)
	}
	ctx, cancel := s.clusterCtx(ctx)
	defer cancel()
	res, affected, err := r.call(ctx)
	if r.audit != nil {
		s.cfg.Audit.Record(ctx, p, req.Peer().Addr, r.name, r.audit, affected, err)
	}
	if err != nil {
		if r.errs != nil {
			return nil, r.errs(err)
		}
		return nil, clusterError(err)
	}
	return connect.NewResponse(res), nil
}
