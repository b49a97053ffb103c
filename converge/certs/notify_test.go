package certs_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/certs"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/pki/pkitest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// restarts is a service provider that records the notifications it gets.
type restarts struct {
	mu       sync.Mutex
	notified [][]string
}

func (r *restarts) Kind() string { return converge.KindService }

func (r *restarts) Plan(_ context.Context, _ *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	var out []*converge.Change
	for _, it := range b.Items {
		out = append(out, &converge.Change{Key: it.Key, Resource: it.Resource, Needed: len(it.Notified) > 0, Summary: "restart"})
		if len(it.Notified) > 0 {
			r.mu.Lock()
			r.notified = append(r.notified, it.Notified)
			r.mu.Unlock()
		}
	}
	return out, nil
}

func (r *restarts) Apply(context.Context, *converge.Env, []*converge.Change) error { return nil }

func (r *restarts) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.notified)
}

// TestRenewalNotifies: through the real engine, a certificate issued or
// renewed notifies the services listing it (restarted after it), and a
// run with nothing to renew notifies none.
func TestRenewalNotifies(t *testing.T) {
	d := pkitest.New(t)
	facts := &hivev1.NodeFacts{Name: "web-1", Addresses: []string{"10.0.0.5"}}
	c := &hivev1.Certificate{Name: "docker", CertPath: "/etc/docker/cert.pem", KeyPath: "/etc/docker/key.pem", ValiditySeconds: 3600, KeyMode: 0o600}
	var mu sync.Mutex
	var now time.Time
	p := certs.New(certs.Config{Issuer: &fakeIssuer{ca: d.CA, facts: facts, res: map[string]*hivev1.Certificate{"docker": c}}, CAFile: d.CAFile(),
		Now: func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			if now.IsZero() {
				return time.Now()
			}
			return now
		}})
	svc := &restarts{}
	reg, err := converge.NewRegistry(p, svc)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := converge.New(converge.Config{Root: t.TempDir(), Runner: &convergetest.Recorder{}, Family: converge.FamilyDebian, Logger: slog.New(slog.DiscardHandler)}, reg)
	if err != nil {
		t.Fatal(err)
	}
	st := &hivev1.NodeState{Node: "web-1", Generation: 1, Facts: facts, Resources: []*hivev1.Resource{
		{Key: "certificate:docker", Notify: []string{"service:docker.service"}, Kind: &hivev1.Resource_Certificate{Certificate: c}},
		{Key: "service:docker.service", Kind: &hivev1.Resource_Service{Service: &hivev1.Service{Name: "docker.service", State: hivev1.ServiceState_SERVICE_STATE_RUNNING}}},
	}}
	run := func(want hivev1.Outcome) {
		t.Helper()
		rep, err := eng.Run(context.Background(), st, converge.RunOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rep.GetResults() {
			if r.GetKey() == "certificate:docker" && r.GetOutcome() != want {
				t.Fatalf("certificate %v (%s), want %v", r.GetOutcome(), r.GetMessage(), want)
			}
		}
	}
	run(hivev1.Outcome_OUTCOME_CHANGED)
	if svc.count() != 1 {
		t.Fatalf("issue notified %d times", svc.count())
	}
	run(hivev1.Outcome_OUTCOME_OK)
	if svc.count() != 1 {
		t.Fatal("a run with nothing to renew notified the service")
	}
	mu.Lock()
	now = p.NextRenewal().Add(time.Second)
	mu.Unlock()
	run(hivev1.Outcome_OUTCOME_CHANGED)
	if svc.count() != 2 {
		t.Fatalf("renewal notified %d times in all, want 2", svc.count())
	}
}
