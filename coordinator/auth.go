package coordinator

import (
	"context"
	"strings"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// access is who may call a method.
type access int

const (
	accessNone        access = iota // nobody (unknown methods)
	accessOpen                      // anyone, even without a certificate
	accessAdmin                     // admins
	accessAdminOrPeer               // admins and coordinators
	accessNode                      // agents (as themselves, checked in the handler) and admins
	accessCoordinator               // coordinators only
)

var coordSvc = "/" + hivev1.CoordinatorService_ServiceDesc.ServiceName + "/"
var clusterSvc = "/" + hivev1.ClusterService_ServiceDesc.ServiceName + "/"

var methodAccess = map[string]access{
	coordSvc + "Push":                 accessAdmin,
	coordSvc + "Rollback":             accessAdmin,
	coordSvc + "SetSecret":            accessAdmin,
	coordSvc + "DeleteSecret":         accessAdmin,
	coordSvc + "CreateBootstrapToken": accessAdmin,
	coordSvc + "LabelNode":            accessAdmin,
	coordSvc + "AddPeer":              accessAdminOrPeer,
	coordSvc + "RemovePeer":           accessAdminOrPeer,
	coordSvc + "ListGenerations":      accessAdminOrPeer,
	coordSvc + "GetGeneration":        accessAdminOrPeer,
	coordSvc + "DiffGenerations":      accessAdminOrPeer,
	coordSvc + "GetStatus":            accessAdminOrPeer,
	coordSvc + "ListMembers":          accessAdminOrPeer,
	coordSvc + "ListSecrets":          accessAdminOrPeer,
	coordSvc + "ListPeers":            accessAdminOrPeer,
	coordSvc + "ListDriftRepairs":     accessAdminOrPeer,
	coordSvc + "GetNodeState":         accessNode,
	coordSvc + "WatchNodeState":       accessNode,
	coordSvc + "Report":               accessNode,
	coordSvc + "ReportStream":         accessNode, // each report's node checked in the handler
	coordSvc + "RequestCertificate":   accessOpen,
	coordSvc + "RevokeNode":           accessAdmin,
	coordSvc + "RemoveNode":           accessAdmin,
	coordSvc + "RenewCertificate":     accessNode, // agents only, checked in the handler
	coordSvc + "ListAudit":            accessAdminOrPeer,
	coordSvc + "WatchEvents":          accessAdminOrPeer,
	clusterSvc + "Apply":              accessCoordinator,
	clusterSvc + "GetKeys":            accessCoordinator,
	clusterSvc + "ReadIndex":          accessCoordinator,
	clusterSvc + "RaftStats":          accessCoordinator,
}

type identityKey struct{}

// devIdentity is every caller in --dev mode.
var devIdentity = pki.Identity{Kind: pki.KindAdmin, Name: "dev"}

// callerFrom returns the identity the auth interceptor attached to ctx.
func callerFrom(ctx context.Context) pki.Identity {
	id, _ := ctx.Value(identityKey{}).(pki.Identity)
	return id
}

// authorize decides a call and returns the context carrying the caller.
func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") || strings.HasPrefix(method, "/grpc.reflection.") {
		return ctx, nil
	}
	acc, ok := methodAccess[method]
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "method %s is not allowed", method)
	}
	if s.cfg.Dev {
		id, err := pki.IdentityFromContext(ctx)
		if err != nil {
			id = devIdentity
		}
		return context.WithValue(ctx, identityKey{}, id), nil
	}
	if acc == accessOpen {
		return ctx, nil
	}
	id, err := pki.IdentityFromContext(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "%s needs a client certificate of the site's CA: %v", method, err)
	}
	allowed := false
	switch acc {
	case accessAdmin:
		allowed = id.Kind == pki.KindAdmin
	case accessAdminOrPeer:
		allowed = id.Kind == pki.KindAdmin || id.Kind == pki.KindCoordinator
	case accessNode:
		allowed = id.Kind == pki.KindAdmin || id.Kind == pki.KindAgent
	case accessCoordinator:
		allowed = id.Kind == pki.KindCoordinator
	}
	if !allowed {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method[strings.LastIndex(method, "/")+1:])
	}
	if err := s.checkCert(ctx, id); err != nil {
		return nil, err
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

// checkNode allows an agent to act only as itself; admins act as anyone.
func checkNode(ctx context.Context, node string) error {
	id := callerFrom(ctx)
	if id.Kind == pki.KindAgent && id.Name != node {
		return status.Errorf(codes.PermissionDenied, "%s may only act as node %q, not %q", id, id.Name, node)
	}
	return nil
}

// author is the name recorded for a write.
func author(ctx context.Context) string {
	id := callerFrom(ctx)
	if id.Name == "" {
		return "unknown"
	}
	if id.Kind == pki.KindAdmin {
		return id.Name
	}
	return id.String()
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if tapAuthorized(ctx, info.FullMethod) {
		return h(ctx, req)
	}
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		s.metrics.denied.Inc()
		return nil, err
	}
	return h(ctx, req)
}

type authStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authStream) Context() context.Context { return a.ctx }

// streamAuthed authorises a stream (unless tapAuth did) and returns it with
// the caller's identity in its context.
func (s *Server) streamAuthed(ss grpc.ServerStream, method string) (grpc.ServerStream, error) {
	if tapAuthorized(ss.Context(), method) {
		return ss, nil
	}
	ctx, err := s.authorize(ss.Context(), method)
	if err != nil {
		s.metrics.denied.Inc()
		return nil, err
	}
	return &authStream{ServerStream: ss, ctx: ctx}, nil
}
