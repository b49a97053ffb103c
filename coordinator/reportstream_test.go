package coordinator

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// streamReport is a small valid final report of node.
func streamReport(node string, seq uint64) *hivev1.Report {
	now := time.Now()
	return &hivev1.Report{
		Node: node, Generation: 1, Phase: hivev1.Phase_PHASE_CONVERGED, Seq: seq, AgentVersion: "v1.0.0", Trigger: "state",
		StateHash: strings.Repeat("0f", 32), Started: timestamppb.New(now.Add(-time.Second)), Finished: timestamppb.New(now),
		Results: []*hivev1.ResourceResult{{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_OK}},
	}
}

// rawReportStream opens a ReportStream that sends rawMessage bytes as they
// are (and ReportRequests encoded), so a test can send what a real client
// would not (an oversized message).
func rawReportStream(ctx context.Context, t *testing.T, conn *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		hivev1.CoordinatorService_ReportStream_FullMethodName, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// recvAll reads answers until the stream ends; it returns them by seq and
// the stream's end (nil for a clean end).
func recvAll(t *testing.T, st grpc.ClientStream) (map[uint64]*hivev1.ReportResponse, error) {
	t.Helper()
	got := map[uint64]*hivev1.ReportResponse{}
	for {
		resp := &hivev1.ReportResponse{}
		if err := st.RecvMsg(resp); err != nil {
			if err == io.EOF {
				err = nil
			}
			return got, err
		}
		if _, dup := got[resp.GetSeq()]; dup {
			t.Errorf("seq %d answered twice", resp.GetSeq())
		}
		got[resp.GetSeq()] = resp
	}
}

// TestReportStream: over real gRPC and mutual TLS, through a follower of a
// three-server cluster, an agent's pipelined reports over one ReportStream
// are each answered by seq once committed and land in status; an
// APPLYING report is answered at once and shows as applying; a bad report
// in the middle is answered with its code and message and does not cost
// the answers of the good ones around it, nor the stream; a report for
// another node than the certificate's ends the stream (PermissionDenied)
// after the reports before it were answered; so does a message over the
// Report request cap (InvalidArgument), which is never decoded, and a
// report after the node's certificate was revoked (PermissionDenied).
func TestReportStream(t *testing.T) {
	nodes, tc := newCluster(t, 3, clusterOpts{})
	l := leader(t, nodes)
	f := followers(nodes, l)[0]
	agentConn := tc.dialAgentConn(t, f.GRPCAddr(), "web-1")
	agent := hivev1.NewCoordinatorServiceClient(agentConn)
	admin := tc.dial(t, f.GRPCAddr(), pki.KindAdmin, "ops")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status1 := func() *hivev1.NodeStatus {
		t.Helper()
		resp, err := admin.GetStatus(ctx, &hivev1.GetStatusRequest{Node: "web-1"})
		if err != nil || len(resp.GetNodes()) != 1 {
			t.Fatalf("status: %v %v", resp, err)
		}
		return resp.GetNodes()[0]
	}

	reportSeq := func() uint64 { return f.fsm.Store().Report("web-1").GetSeq() }

	t.Run("pipelined reports land in status", func(t *testing.T) {
		st, err := agent.ReportStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const n = 30
		sent := time.Now()
		go func() {
			// All sent at once: the server reads ReportStreamInflight
			// ahead, flow control holds the rest.
			for i := uint64(1); i <= n; i++ {
				if err := st.Send(&hivev1.ReportRequest{Seq: 100 + i, Report: streamReport("web-1", i)}); err != nil {
					t.Errorf("send %d: %v", i, err)
					return
				}
			}
			st.CloseSend()
		}()
		got := map[uint64]bool{}
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("recv after %d answers: %v", len(got), err)
			}
			if !resp.GetAccepted() || resp.GetCode() != 0 {
				t.Errorf("seq %d refused: %v %s", resp.GetSeq(), codes.Code(resp.GetCode()), resp.GetMessage())
			}
			got[resp.GetSeq()] = true
		}
		if len(got) != n || !got[101] || !got[100+n] {
			t.Fatalf("answers for %d seqs (%v), want 101..%d", len(got), got, 100+n)
		}
		t.Logf("%d reports answered in %v", n, time.Since(sent))
		// Answered means committed; this follower applies it soon after.
		waitFor(t, 10*time.Second, "the last report in the follower's state", func() bool { return reportSeq() == n })
		if g := status1().GetAppliedGeneration(); g != 1 {
			t.Errorf("status shows generation %d applied, want 1", g)
		}

		// APPLYING: answered at once, shown as applying here.
		st, err = agent.ReportStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ap := streamReport("web-1", n+1)
		ap.Phase, ap.Generation, ap.Results, ap.Finished = hivev1.Phase_PHASE_APPLYING, 2, nil, nil
		if err := st.Send(&hivev1.ReportRequest{Seq: 7, Report: ap}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil || resp.GetSeq() != 7 || !resp.GetAccepted() {
			t.Fatalf("applying report: %v %v", resp, err)
		}
		if p := status1().GetPhase(); p != hivev1.Phase_PHASE_APPLYING {
			t.Errorf("status phase %v after the applying report, want APPLYING", p)
		}
		st.CloseSend()
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("stream end: %v, want EOF", err)
		}
	})

	t.Run("bad report in the middle", func(t *testing.T) {
		st, err := agent.ReportStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(1); i <= 5; i++ {
			r := streamReport("web-1", 200+i)
			if i == 3 {
				r.StateHash = "not-a-hash"
			}
			if err := st.Send(&hivev1.ReportRequest{Seq: i, Report: r}); err != nil {
				t.Fatal(err)
			}
		}
		// Seq 6 has no report at all: refused, not the stream's end.
		if err := st.Send(&hivev1.ReportRequest{Seq: 6}); err != nil {
			t.Fatal(err)
		}
		st.CloseSend()
		got := map[uint64]*hivev1.ReportResponse{}
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("stream ended: %v (answers %v)", err, got)
			}
			got[resp.GetSeq()] = resp
		}
		for _, i := range []uint64{1, 2, 4, 5} {
			if !got[i].GetAccepted() {
				t.Errorf("good report %d: %v", i, got[i])
			}
		}
		if r := got[3]; r.GetAccepted() || codes.Code(r.GetCode()) != codes.InvalidArgument || !strings.Contains(r.GetMessage(), "report.state_hash") {
			t.Errorf("bad report's answer: %v", r)
		}
		if r := got[6]; r.GetAccepted() || codes.Code(r.GetCode()) != codes.InvalidArgument || !strings.Contains(r.GetMessage(), "report is required") {
			t.Errorf("empty request's answer: %v", r)
		}
		t.Logf("refused: %s; %s", got[3].GetMessage(), got[6].GetMessage())
		waitFor(t, 10*time.Second, "report 205 in the follower's state", func() bool { return reportSeq() == 205 })
	})

	t.Run("another node ends the stream", func(t *testing.T) {
		st := rawReportStream(ctx, t, agentConn)
		for i, node := range []string{"web-1", "web-2", "web-1"} {
			if err := st.SendMsg(&hivev1.ReportRequest{Seq: uint64(i + 1), Report: streamReport(node, uint64(300+i))}); err != nil {
				break // the server may have ended the stream already
			}
		}
		got, err := recvAll(t, st)
		wantCode(t, "report as web-2", err, codes.PermissionDenied, `may only act as node "web-1", not "web-2"`)
		if !got[1].GetAccepted() {
			t.Errorf("the report before the foreign one was not answered: %v", got)
		}
		if _, ok := got[3]; ok {
			t.Errorf("a report after the foreign one was taken: %v", got[3])
		}
	})

	t.Run("oversized message ends the stream", func(t *testing.T) {
		huge := streamReport("web-1", 400)
		huge.Results[0].Diff = strings.Repeat("x", MaxReportRequestBytes)
		wire, err := proto.Marshal(&hivev1.ReportRequest{Seq: 2, Report: huge})
		if err != nil {
			t.Fatal(err)
		}
		st := rawReportStream(ctx, t, agentConn)
		if err := st.SendMsg(&hivev1.ReportRequest{Seq: 1, Report: streamReport("web-1", 401)}); err != nil {
			t.Fatal(err)
		}
		_ = st.SendMsg(rawMessage(wire))
		got, err := recvAll(t, st)
		wantCode(t, "oversized message", err, codes.InvalidArgument,
			fmt.Sprintf("ReportStream request is %d bytes; the limit for ReportStream is %d bytes", len(wire), MaxReportRequestBytes))
		if !got[1].GetAccepted() || len(got) != 1 {
			t.Errorf("answers: %v, want seq 1 accepted only", got)
		}
	})

	t.Run("revoked while streaming ends the stream", func(t *testing.T) {
		st, err := agent.ReportStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&hivev1.ReportRequest{Seq: 1, Report: streamReport("web-1", 500)}); err != nil {
			t.Fatal(err)
		}
		if resp, err := st.Recv(); err != nil || !resp.GetAccepted() {
			t.Fatalf("report before the revocation: %v %v", resp, err)
		}
		if _, err := admin.RevokeNode(ctx, &hivev1.RevokeNodeRequest{Node: "web-1", Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the revocation on the stream's server", func() bool { return f.fsm.Store().Revocation("web-1") != nil })
		_ = st.Send(&hivev1.ReportRequest{Seq: 2, Report: streamReport("web-1", 501)})
		resp, err := st.Recv()
		wantCode(t, "report after the revocation", err, codes.PermissionDenied, "web-1")
		if resp != nil {
			t.Errorf("the report after the revocation was answered: %v", resp)
		}
	})
}

// TestReportStreamRate: a node's report rate is the same bucket over a
// stream as over Report calls: a stream that sends more than the burst
// gets ResourceExhausted answers (and keeps going), a Report call of the
// same node is then refused too, another node's stream is not.
func TestReportStreamRate(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	addr := nodes[0].GRPCAddr()
	flooder := tc.dial(t, addr, pki.KindAgent, "web-1")
	other := tc.dial(t, addr, pki.KindAgent, "web-2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(c hivev1.CoordinatorServiceClient, node string, n int) (accepted int, refused *hivev1.ReportResponse) {
		t.Helper()
		st, err := c.ReportStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for i := 1; i <= n; i++ {
				if err := st.Send(&hivev1.ReportRequest{Seq: uint64(i), Report: streamReport(node, uint64(i))}); err != nil {
					return
				}
			}
			st.CloseSend()
		}()
		for {
			resp, err := st.Recv()
			if err == io.EOF {
				return accepted, refused
			}
			if err != nil {
				t.Fatalf("%s's stream ended: %v", node, err)
			}
			if resp.GetAccepted() {
				accepted++
			} else if refused == nil {
				refused = resp
			}
		}
	}
	start := time.Now()
	accepted, refused := send(flooder, "web-1", ReportBurst+30)
	took := time.Since(start)
	if refused == nil || codes.Code(refused.GetCode()) != codes.ResourceExhausted || !strings.Contains(refused.GetMessage(), "node web-1 is over its report rate") {
		t.Fatalf("flood over a stream: %d accepted, first refusal %v", accepted, refused)
	}
	t.Logf("accepted %d of %d in %v; then %s", accepted, ReportBurst+30, took, refused.GetMessage())
	if max := ReportBurst + int(took.Seconds()*ReportRate) + 1; accepted < ReportBurst || accepted > max {
		t.Errorf("accepted %d reports before the limit, want %d..%d", accepted, ReportBurst, max)
	}
	_, err := flooder.Report(ctx, &hivev1.ReportRequest{Report: streamReport("web-1", 1000)})
	wantCode(t, "a Report call after the stream spent the burst", err, codes.ResourceExhausted, "node web-1 is over its report rate")
	if n, refused := send(other, "web-2", 10); n != 10 {
		t.Errorf("another node's stream: %d of 10 accepted (%v)", n, refused)
	}
}

// TestReportStreamStop: a coordinator that stops tells the agents on its
// report streams (seq 0, Unavailable) instead of holding its shutdown on
// their Recv; an agent that closes its side then gets a clean end.
func TestReportStreamStop(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent := tc.dial(t, nodes[0].GRPCAddr(), pki.KindAgent, "web-1")
	st, err := agent.ReportStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&hivev1.ReportRequest{Seq: 1, Report: streamReport("web-1", 1)}); err != nil {
		t.Fatal(err)
	}
	if resp, err := st.Recv(); err != nil || !resp.GetAccepted() {
		t.Fatalf("first report: %v %v", resp, err)
	}
	stopped := make(chan struct{})
	go func() { nodes[0].stop(t); close(stopped) }()
	resp, err := st.Recv()
	if err != nil || resp.GetSeq() != 0 || codes.Code(resp.GetCode()) != codes.Unavailable {
		t.Fatalf("while the server stops: %v %v, want seq 0 Unavailable", resp, err)
	}
	start := time.Now()
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF && status.Code(err) != codes.Unavailable {
		t.Errorf("after closing: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not stop")
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the server took %v to stop after the agent closed its stream (GracefulStop's 3 s timeout?)", d)
	}
}
