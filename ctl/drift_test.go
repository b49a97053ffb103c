package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func sampleDrift() *hivev1.ListDriftRepairsResponse {
	return &hivev1.ListDriftRepairsResponse{Repairs: []*hivev1.DriftRepair{
		{Node: "web-1", Key: "file:/etc/nginx/nginx.conf", Generation: 7, Time: ts(3 * time.Minute), Message: "content differed\n(sha256 1a2b → 9f8e)"},
		{Node: "db-1", Key: "service:postgresql.service", Generation: 7, Time: ts(2 * time.Hour), Message: "was stopped; started"},
	}}
}

// ListDriftRepairs serves sampleDrift, filtered like the real server.
func (f *fakeCoordinator) ListDriftRepairs(_ context.Context, req *hivev1.ListDriftRepairsRequest) (*hivev1.ListDriftRepairsResponse, error) {
	if req.GetNode() == "nope" {
		return nil, status.Error(codes.NotFound, `node "nope" is not known (it has never watched or reported)`)
	}
	out := &hivev1.ListDriftRepairsResponse{}
	for _, r := range sampleDrift().GetRepairs() {
		if req.GetNode() != "" && r.GetNode() != req.GetNode() {
			continue
		}
		if req.GetSince() != nil && r.GetTime().AsTime().Before(req.GetSince().AsTime()) {
			continue
		}
		out.Repairs = append(out.Repairs, r)
	}
	return out, nil
}

// TestDriftCommand: hivectl drift passes --node and --since to the
// coordinator and prints the table or JSON; errors are precise.
func TestDriftCommand(t *testing.T) {
	clearEnv(t)
	f := newFake()
	addr := serveFake(t, f, nil)
	conn := []string{"--dev", "--addr", addr}
	// The sample's times are relative to goldenNow (in the past): --since 0
	// lists everything kept.
	r := run(t, "", append([]string{"drift", "--since", "0", "-o", "json"}, conn...)...)
	var d driftJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil || len(d.Repairs) != 2 {
		t.Fatalf("drift -o json: %+v", r)
	}
	r = run(t, "", append([]string{"drift", "--since", "0", "--node", "db-1"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "service:postgresql.service") || strings.Contains(r.stdout, "web-1") {
		t.Fatalf("drift --node: %+v", r)
	}
	r = run(t, "", append([]string{"drift"}, conn...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "no drift repaired in the last 24h") {
		t.Fatalf("drift (default 24h, old sample): %+v", r)
	}
	if r := run(t, "", append([]string{"drift", "--node", "nope"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, `node "nope" is not known`) {
		t.Fatalf("unknown node: %+v", r)
	}
	if r := run(t, "", append([]string{"drift", "--since", "-1h"}, conn...)...); r.code == 0 || !strings.Contains(r.stderr, "must not be negative") {
		t.Fatalf("negative since: %+v", r)
	}
}
