package coordinator

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/hivefleet/hive/limits"
	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits on what callers send, besides the report's own (package limits).
// docs/operations.md lists every one with its error.
const (
	// recvHeadroom is added to Config.MaxPushBytes to make gRPC's own
	// limit on one received message (grpc.MaxRecvMsgSize): a push a little
	// over MaxPushBytes still gets Push's precise InvalidArgument, and a
	// forwarded push (ClusterService.Apply) fits. A larger message is
	// refused by gRPC before it is read (ResourceExhausted).
	recvHeadroom = 1 << 20
	// MaxReportRequestBytes caps an encoded ReportRequest: a maximal
	// Report and its envelope.
	MaxReportRequestBytes = limits.MaxReportBytes + 16
	// MaxAgentRequestBytes caps each request message of the other calls
	// an agent, or a client without a certificate, may make (node state,
	// watch, certificate request, health, reflection).
	MaxAgentRequestBytes = 64 << 10

	// ReportRate is how many report tokens a node earns per second, and
	// ReportBurst how many it may hold: enough for a run's "applying" and
	// final reports and for flushing a full on-disk queue (100 reports by
	// default) after a reconnect. A report costs one token plus one per
	// whole ReportCostBytes of its encoding. Admins are not limited.
	ReportRate      = 1.0
	ReportBurst     = 120
	ReportCostBytes = 64 << 10

	// ReportEntryMaxBytes is the most report bytes the batcher puts in
	// one raft entry (a ReportBatchCommand), so that no entry stalls
	// replication and heartbeats long enough to cost an election.
	ReportEntryMaxBytes = 2 << 20
	// ReportQueueMaxBytes bounds the reports held by the batcher (queued
	// and being committed); ReportQueueMaxPerBatch times
	// Config.ReportBatchMax bounds their number. A report over either is
	// refused with ResourceExhausted (the agent keeps it and retries).
	ReportQueueMaxBytes    = 64 << 20
	ReportQueueMaxPerBatch = 8
)

// methodMaxBytes caps the encoded request messages of the calls agents and
// unauthenticated clients can make; other calls (admins', coordinators')
// are bounded only by gRPC's limit (MaxPushBytes + recvHeadroom).
var methodMaxBytes = map[string]int{
	coordSvc + "Report":                                              MaxReportRequestBytes,
	coordSvc + "ReportStream":                                        MaxReportRequestBytes, // every message
	coordSvc + "GetNodeState":                                        MaxAgentRequestBytes,
	coordSvc + "WatchNodeState":                                      MaxAgentRequestBytes,
	coordSvc + "RequestCertificate":                                  MaxAgentRequestBytes,
	"/grpc.health.v1.Health/Check":                                   MaxAgentRequestBytes,
	"/grpc.health.v1.Health/List":                                    MaxAgentRequestBytes,
	"/grpc.health.v1.Health/Watch":                                   MaxAgentRequestBytes,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      MaxAgentRequestBytes,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": MaxAgentRequestBytes,
}

// typeMaxBytes is methodMaxBytes by request type, for the codec, which
// sees the message but not the method. Each type is the request of one
// capped method (or of several with the same cap).
var typeMaxBytes = map[protoreflect.FullName]int{
	fullName(&hivev1.ReportRequest{}):                 MaxReportRequestBytes,
	fullName(&hivev1.GetNodeStateRequest{}):           MaxAgentRequestBytes,
	fullName(&hivev1.WatchNodeStateRequest{}):         MaxAgentRequestBytes,
	fullName(&hivev1.RequestCertificateRequest{}):     MaxAgentRequestBytes,
	"grpc.health.v1.HealthCheckRequest":               MaxAgentRequestBytes,
	"grpc.health.v1.HealthListRequest":                MaxAgentRequestBytes,
	"grpc.reflection.v1.ServerReflectionRequest":      MaxAgentRequestBytes,
	"grpc.reflection.v1alpha.ServerReflectionRequest": MaxAgentRequestBytes,
}

func fullName(m proto.Message) protoreflect.FullName { return m.ProtoReflect().Descriptor().FullName() }

// oversizeField is the unknown field in which the codec records the wire
// size of a capped request it did not decode.
const oversizeField = protowire.MaxValidNumber

// Unmarshal decodes a request, except one of a capped type whose wire
// size is over its cap: that one is left empty but for oversizeField
// holding the size, so the size interceptor refuses it by its wire size
// with InvalidArgument (an error here would reach the caller as Internal)
// and the large message is never decoded into memory.
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(proto.Message); ok {
		if limit, ok := typeMaxBytes[fullName(m)]; ok && data.Len() > limit {
			var b []byte
			b = protowire.AppendTag(b, oversizeField, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(data.Len()))
			m.ProtoReflect().SetUnknown(b)
			return nil
		}
	}
	return c.CodecV2.Unmarshal(data, v)
}

// wireSize returns the size the codec recorded for an undecoded request,
// or proto.Size of a decoded one. (A client that sends oversizeField
// itself gains nothing: a request it is in was decoded, so it was within
// its cap on the wire.)
func wireSize(m proto.Message) int {
	u := m.ProtoReflect().GetUnknown()
	for len(u) > 0 {
		num, typ, n := protowire.ConsumeTag(u)
		if n < 0 {
			break
		}
		u = u[n:]
		if num == oversizeField && typ == protowire.VarintType {
			if v, n := protowire.ConsumeVarint(u); n > 0 {
				return int(v)
			}
		}
		n = protowire.ConsumeFieldValue(num, typ, u)
		if n < 0 {
			break
		}
		u = u[n:]
	}
	return proto.Size(m)
}

// checkRequestSize refuses a request message over its method's cap.
func checkRequestSize(method string, m any) error {
	limit, ok := methodMaxBytes[method]
	if !ok {
		return nil
	}
	pm, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	if size := wireSize(pm); size > limit {
		name := method[strings.LastIndex(method, "/")+1:]
		return status.Errorf(codes.InvalidArgument, "%s request is %d bytes; the limit for %s is %d bytes", name, size, name, limit)
	}
	return nil
}

// tapAuth runs when a call's headers arrive, before its request message
// is read: a call the caller may not make (unknown method, no
// certificate, wrong kind) is refused there, so a client without a
// certificate never has the coordinator read a message for a method it
// cannot call (up to MaxRecvMsgSize). The interceptors authorise calls
// that did not pass here (none over the gRPC server; tests call them
// directly). It runs on the connection's reader goroutine:
// it must not block, and does not (a map lookup and the verified chain).
//
// The context it returns is the call's: it carries the identity and marks
// the method authorised, so the interceptors do not authorise a second
// time (a report paid for both: 7 % of a coordinator's CPU under
// hive-load).
func (s *Server) tapAuth(ctx context.Context, info *tap.Info) (context.Context, error) {
	actx, err := s.authorize(ctx, info.FullMethodName)
	if err != nil {
		s.metrics.denied.Inc()
		return ctx, err
	}
	return context.WithValue(actx, authorizedKey{}, info.FullMethodName), nil
}

// authorizedKey marks a call's context as authorised by tapAuth for the
// method it holds.
type authorizedKey struct{}

// tapAuthorized reports whether tapAuth authorised this call's method.
func tapAuthorized(ctx context.Context, method string) bool {
	m, _ := ctx.Value(authorizedKey{}).(string)
	return m == method
}

// unarySize is the unary interceptor of methodMaxBytes; it runs after
// authorisation and before the handler.
func (s *Server) unarySize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := checkRequestSize(info.FullMethod, req); err != nil {
		s.metrics.refused.WithLabelValues("size").Inc()
		return nil, err
	}
	return h(ctx, req)
}

// streamCheck is the server's one stream interceptor: authorisation
// (streamAuthed) and then methodMaxBytes on every message the stream
// receives. One interceptor rather than gRPC's chain of two, and a closure
// rather than a method value: one frame under every stream handler instead
// of six (a watch's handler waits under them for as long as the agent
// watches).
func (s *Server) streamCheck() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ss, err := s.streamAuthed(ss, info.FullMethod)
		if err != nil {
			return err
		}
		if _, ok := methodMaxBytes[info.FullMethod]; ok {
			ss = &sizeStream{ServerStream: ss, s: s, method: info.FullMethod}
		}
		return h(srv, ss)
	}
}

type sizeStream struct {
	grpc.ServerStream
	s      *Server
	method string
}

func (z *sizeStream) RecvMsg(m any) error {
	if err := z.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := checkRequestSize(z.method, m); err != nil {
		z.s.metrics.refused.WithLabelValues("size").Inc()
		return err
	}
	return nil
}

// admitReport decides whether r may go to the batcher: the node's rate
// (agents only) and then the report's bounds. Its errors are gRPC statuses
// naming the limit.
func (s *Server) admitReport(ctx context.Context, r *hivev1.Report) error {
	if id := callerFrom(ctx); id.Kind == pki.KindAgent {
		cost := 1 + float64(proto.Size(r)/ReportCostBytes)
		if ok, wait := s.reportLimit.take(id.Name, cost); !ok {
			s.metrics.refused.WithLabelValues("rate").Inc()
			return status.Errorf(codes.ResourceExhausted, "node %s is over its report rate (%g per second, burst %d; this report costs %g); retry in %v",
				id.Name, ReportRate, ReportBurst, cost, wait.Round(time.Millisecond))
		}
	}
	if err := limits.CheckReport(r, time.Now()); err != nil {
		s.metrics.refused.WithLabelValues("shape").Inc()
		var le *limits.Error
		if errors.As(err, &le) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

// rateLimiter is a token bucket per key. Buckets that have refilled are
// forgotten once the map has doubled since the last sweep, so memory stays
// proportional to the keys active within about ReportBurst/ReportRate
// seconds. Safe for concurrent use; never blocks beyond its own mutex.
type rateLimiter struct {
	rate, burst float64
	now         func() time.Time
	// maxKeys, when not 0, bounds the buckets: a new key finding the
	// table full (after forgetting refilled buckets) is refused.
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
	sweepAt int
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate, burst float64, now func() time.Time) *rateLimiter {
	return &rateLimiter{rate: rate, burst: burst, now: now, buckets: map[string]*bucket{}, sweepAt: 1024}
}

// take takes cost tokens from key's bucket; when there are not enough, it
// takes none and says how long until there will be.
func (l *rateLimiter) take(key string, cost float64) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.sweepAt || l.maxKeys > 0 && len(l.buckets) >= l.maxKeys {
			l.sweepLocked(now)
		}
		if l.maxKeys > 0 && len(l.buckets) >= l.maxKeys {
			return false, time.Second
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < cost {
		return false, time.Duration((cost - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens -= cost
	return true, 0
}

func (l *rateLimiter) sweepLocked(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	l.sweepAt = max(1024, 2*len(l.buckets))
}
