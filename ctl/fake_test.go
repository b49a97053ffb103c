package ctl

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// fakeCoordinator is an in-process CoordinatorService over real TCP for
// the CLI's logic: it keeps generations and secrets in memory, refuses
// stale pushes like the real one, and serves statuses from a script.
type fakeCoordinator struct {
	hivev1.UnimplementedCoordinatorServiceServer

	mu          sync.Mutex
	generations []*hivev1.Generation
	secrets     map[string][]byte
	pushes      []*hivev1.PushRequest
	// statuses are served in turn by GetStatus (the last one repeats).
	statuses   []*hivev1.GetStatusResponse
	statusCall int
	members    []*hivev1.Member
	// nodes is returned by Push as the nodes the generation applies to.
	nodes []string
	// requireAdmin rejects writes from non-admin TLS callers, as the real
	// coordinator does.
	requireAdmin bool
	callers      []string
	peers        []*hivev1.RaftPeer
	lastAddPeer  *hivev1.AddPeerRequest
	// ca signs bootstrap requests; tokens maps token to node ("" any).
	ca     *pki.CA
	tokens map[string]string
}

func newFake() *fakeCoordinator {
	return &fakeCoordinator{secrets: map[string][]byte{}, tokens: map[string]string{}}
}

func (f *fakeCoordinator) current() uint64 { return uint64(len(f.generations)) }

func (f *fakeCoordinator) checkWrite(ctx context.Context) error {
	id, err := pki.IdentityFromContext(ctx)
	f.mu.Lock()
	f.callers = append(f.callers, id.String())
	f.mu.Unlock()
	if !f.requireAdmin {
		return nil
	}
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "%v", err)
	}
	if id.Kind != pki.KindAdmin {
		return status.Errorf(codes.PermissionDenied, "%s may not write", id)
	}
	return nil
}

func (f *fakeCoordinator) Push(ctx context.Context, req *hivev1.PushRequest) (*hivev1.PushResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pushes = append(f.pushes, req)
	if !req.GetForce() && req.GetBaseGeneration() != f.current() {
		return nil, status.Errorf(codes.FailedPrecondition, "stale base generation %d (current %d)", req.GetBaseGeneration(), f.current())
	}
	sum := "sha-" + string(req.GetSource())
	if n := len(f.generations); n > 0 && f.generations[n-1].GetSha256() == sum {
		return &hivev1.PushResponse{Generation: f.current(), Sha256: sum, Unchanged: true}, nil
	}
	g := &hivev1.Generation{Number: f.current() + 1, Parent: f.current(), Sha256: sum, Message: req.GetMessage(),
		Site: req.GetSite(), Source: req.GetSource(), SourceName: req.GetSourceName()}
	f.generations = append(f.generations, g)
	return &hivev1.PushResponse{Generation: g.GetNumber(), Sha256: sum, Nodes: f.nodes}, nil
}

func (f *fakeCoordinator) Rollback(ctx context.Context, req *hivev1.RollbackRequest) (*hivev1.RollbackResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !req.GetForce() && req.GetBaseGeneration() != f.current() {
		return nil, status.Errorf(codes.FailedPrecondition, "stale base")
	}
	if req.GetTarget() == 0 || req.GetTarget() > f.current() {
		return nil, status.Errorf(codes.NotFound, "generation %d does not exist", req.GetTarget())
	}
	old := f.generations[req.GetTarget()-1]
	g := proto.Clone(old).(*hivev1.Generation)
	g.Number, g.Parent, g.RollbackOf, g.Message = f.current()+1, f.current(), old.GetNumber(), req.GetMessage()
	f.generations = append(f.generations, g)
	return &hivev1.RollbackResponse{Generation: g.GetNumber(), Sha256: g.GetSha256()}, nil
}

func (f *fakeCoordinator) ListGenerations(_ context.Context, req *hivev1.ListGenerationsRequest) (*hivev1.ListGenerationsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &hivev1.ListGenerationsResponse{Current: f.current()}
	for i := len(f.generations) - 1; i >= 0; i-- {
		if req.GetLimit() > 0 && len(resp.Generations) >= int(req.GetLimit()) {
			break
		}
		g := f.generations[i]
		resp.Generations = append(resp.Generations, &hivev1.GenerationSummary{
			Number: g.GetNumber(), Parent: g.GetParent(), Sha256: g.GetSha256(), Message: g.GetMessage(), RollbackOf: g.GetRollbackOf(),
		})
	}
	return resp, nil
}

func (f *fakeCoordinator) GetGeneration(_ context.Context, req *hivev1.GetGenerationRequest) (*hivev1.GetGenerationResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := req.GetNumber()
	if n == 0 {
		n = f.current()
	}
	if n == 0 || n > f.current() {
		return nil, status.Errorf(codes.NotFound, "generation %d does not exist", n)
	}
	return &hivev1.GetGenerationResponse{Generation: f.generations[n-1]}, nil
}

func (f *fakeCoordinator) DiffGenerations(_ context.Context, req *hivev1.DiffGenerationsRequest) (*hivev1.DiffGenerationsResponse, error) {
	return &hivev1.DiffGenerationsResponse{Changes: []*hivev1.ResourceChange{
		{Role: "web", Key: "package:nginx", Kind: hivev1.ChangeKind_CHANGE_KIND_MODIFIED, Diff: "-version: 1.26\n+version: 1.27\n"},
	}}, nil
}

func (f *fakeCoordinator) GetStatus(_ context.Context, req *hivev1.GetStatusRequest) (*hivev1.GetStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.statuses) == 0 {
		return &hivev1.GetStatusResponse{Generation: f.current()}, nil
	}
	i := min(f.statusCall, len(f.statuses)-1)
	f.statusCall++
	return onlyNode(proto.Clone(f.statuses[i]).(*hivev1.GetStatusResponse), req.GetNode()), nil
}

// onlyNode keeps only node's status in resp when node is set, as a
// coordinator answers a one-node GetStatus.
func onlyNode(resp *hivev1.GetStatusResponse, node string) *hivev1.GetStatusResponse {
	if node != "" {
		var keep []*hivev1.NodeStatus
		for _, n := range resp.GetNodes() {
			if n.GetName() == node {
				keep = append(keep, n)
			}
		}
		resp.Nodes = keep
	}
	return resp
}

func (f *fakeCoordinator) ListMembers(context.Context, *hivev1.ListMembersRequest) (*hivev1.ListMembersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &hivev1.ListMembersResponse{Members: f.members}, nil
}

func (f *fakeCoordinator) SetSecret(ctx context.Context, req *hivev1.SetSecretRequest) (*hivev1.SetSecretResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets[req.GetName()] = req.GetValue()
	return &hivev1.SetSecretResponse{Nodes: []string{"db-1"}}, nil
}

func (f *fakeCoordinator) ListSecrets(context.Context, *hivev1.ListSecretsRequest) (*hivev1.ListSecretsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &hivev1.ListSecretsResponse{Missing: []string{"api-token"}}
	for name := range f.secrets {
		resp.Secrets = append(resp.Secrets, &hivev1.SecretInfo{Name: name, Referenced: true})
	}
	return resp, nil
}

func (f *fakeCoordinator) DeleteSecret(ctx context.Context, req *hivev1.DeleteSecretRequest) (*hivev1.DeleteSecretResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.secrets[req.GetName()]; !ok {
		return nil, status.Errorf(codes.NotFound, "secret %q does not exist", req.GetName())
	}
	delete(f.secrets, req.GetName())
	return &hivev1.DeleteSecretResponse{}, nil
}

// serveFake serves f over real TCP (TLS when tc is set) and returns the
// address.
func serveFake(t *testing.T, f *fakeCoordinator, tc *tls.Config) string {
	t.Helper()
	addr, _ := serveFakeStoppable(t, f, tc)
	return addr
}

// serveFakeStoppable is serveFake that also returns a function stopping the
// server at once (as a killed coordinator would).
func serveFakeStoppable(t *testing.T, f *fakeCoordinator, tc *tls.Config) (string, func()) {
	t.Helper()
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := grpc.NewServer(opts...)
	hivev1.RegisterCoordinatorServiceServer(s, f)
	healthpb.RegisterHealthServer(s, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), s.Stop
}

// result of one hivectl run.
type result struct {
	code           int
	stdout, stderr string
}

// run runs hivectl in-process with args and stdin, without the
// environment's HIVE_* variables leaking in (tests set them with
// t.Setenv when they mean to).
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb)
	t.Logf("hivectl %s → %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out.String(), errb.String())
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// clearEnv blanks the HIVE_* connection variables for the test.
func clearEnv(t *testing.T) {
	for _, k := range []string{envAddr, envCACert, envCert, envKey, envDev} {
		t.Setenv(k, "")
	}
}

func (f *fakeCoordinator) CreateBootstrapToken(ctx context.Context, req *hivev1.CreateBootstrapTokenRequest) (*hivev1.CreateBootstrapTokenResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	tok := fmt.Sprintf("tok%d", len(f.tokens)+1)
	f.tokens[tok] = req.GetNode()
	return &hivev1.CreateBootstrapTokenResponse{Token: tok, Expires: timestamppb.New(time.Unix(1900000000, 0))}, nil
}

func (f *fakeCoordinator) RequestCertificate(_ context.Context, req *hivev1.RequestCertificateRequest) (*hivev1.RequestCertificateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	node, ok := f.tokens[req.GetToken()]
	if !ok || (node != "" && node != req.GetNode()) {
		return nil, status.Error(codes.PermissionDenied, "token unknown, used, or for another node")
	}
	cert, err := pki.SignAgentCSR(f.ca.Cert, f.ca.Key, req.GetCsr(), req.GetNode())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%v", err)
	}
	delete(f.tokens, req.GetToken())
	return &hivev1.RequestCertificateResponse{Certificate: cert, Ca: f.ca.CertPEM()}, nil
}

func (f *fakeCoordinator) ListPeers(context.Context, *hivev1.ListPeersRequest) (*hivev1.ListPeersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &hivev1.ListPeersResponse{Peers: f.peers}, nil
}

func (f *fakeCoordinator) AddPeer(ctx context.Context, req *hivev1.AddPeerRequest) (*hivev1.AddPeerResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastAddPeer = req
	f.peers = append(f.peers, &hivev1.RaftPeer{Id: req.GetId(), Address: req.GetAddress()})
	return &hivev1.AddPeerResponse{}, nil
}

func (f *fakeCoordinator) RemovePeer(ctx context.Context, req *hivev1.RemovePeerRequest) (*hivev1.RemovePeerResponse, error) {
	if err := f.checkWrite(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, p := range f.peers {
		if p.GetId() == req.GetId() {
			f.peers = append(f.peers[:i], f.peers[i+1:]...)
			break
		}
	}
	return &hivev1.RemovePeerResponse{}, nil
}
