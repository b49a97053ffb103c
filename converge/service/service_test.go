package service_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/converge/service/servicetest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// These tests run the provider against servicetest's in-memory systemd,
// for the call sequences; TestOverDBus adds go-systemd over a real
// dbus-daemon, and TestRealSystemd a real systemd booted in namespaces.

func svc(name string, st hivev1.ServiceState, enabled *bool, reload bool) *hivev1.Resource {
	return &hivev1.Resource{Key: "service:" + name, Kind: &hivev1.Resource_Service{Service: &hivev1.Service{
		Name: name, State: st, Enabled: enabled, ReloadOnNotify: reload}}}
}

var (
	yes     = func() *bool { b := true; return &b }()
	no      = func() *bool { b := false; return &b }()
	running = hivev1.ServiceState_SERVICE_STATE_RUNNING
	stopped = hivev1.ServiceState_SERVICE_STATE_STOPPED
)

func hostEnv() *converge.Env { return &converge.Env{Root: "/"} }

func TestTimeline(t *testing.T) {
	sd := servicetest.New(map[string]*servicetest.Unit{
		"web.service":   {OnDisk: true, Loaded: true},
		"cache.service": {OnDisk: true, Loaded: true, Active: true, Enabled: true},
	})
	convergetest.Run(t, convergetest.Timeline{
		Provider:    service.New(service.Config{Connect: sd.Connect}),
		Env:         hostEnv(),
		Fingerprint: func(*testing.T) string { return sd.State() },
		Desired:     []*hivev1.Resource{svc("web", running, yes, false), svc("cache.service", stopped, no, false)},
		Check: func(t *testing.T) {
			if u := sd.Units["web.service"]; !u.Active || !u.Enabled {
				t.Errorf("web: %+v", u)
			}
			if u := sd.Units["cache.service"]; u.Active || u.Enabled {
				t.Errorf("cache: %+v", u)
			}
		},
		Drift: func(t *testing.T) { sd.Units["web.service"].Active = false },
	})
}

func run(t *testing.T, sd *servicetest.Systemd, env *converge.Env, changed map[string]bool, items ...converge.Item) []*converge.Change {
	t.Helper()
	p := service.New(service.Config{Connect: sd.Connect})
	before := sd.State()
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: items, Changed: changed})
	if err != nil {
		t.Fatal(err)
	}
	if sd.State() != before {
		t.Fatal("plan changed systemd state")
	}
	var needed []*converge.Change
	for i, c := range chs {
		c.Key, c.Resource = items[i].Key, items[i].Resource
		if c.Needed && c.Err == nil {
			needed = append(needed, c)
		}
	}
	if len(needed) > 0 {
		if err := p.Apply(context.Background(), env, needed); err != nil {
			t.Fatal(err)
		}
	}
	return chs
}

func item(r *hivev1.Resource, notified ...string) converge.Item {
	return converge.Item{Key: r.Key, Resource: r, Notified: notified}
}

func TestNotifyRestartReload(t *testing.T) {
	sd := servicetest.New(map[string]*servicetest.Unit{
		"a.service": {OnDisk: true, Loaded: true, Active: true},
		"b.service": {OnDisk: true, Loaded: true, Active: true},
		"c.service": {OnDisk: true, Loaded: true},
	})
	chs := run(t, sd, hostEnv(), nil,
		item(svc("a", running, nil, false), "file:/etc/a.conf"),
		item(svc("b", running, nil, true), "file:/etc/b.conf", "package:b"),
		item(svc("c", running, nil, false), "file:/etc/c.conf"), // not running: a start suffices
	)
	if got := strings.Join(sd.Calls(), "; "); got != "restart a.service; reload b.service; start c.service" {
		t.Errorf("calls: %s", got)
	}
	if chs[1].Summary != "reload (notified by file:/etc/b.conf, package:b)" {
		t.Errorf("summary %q", chs[1].Summary)
	}
}

func TestDaemonReloadForNewUnitFile(t *testing.T) {
	// The unit file was just written by a file resource: systemd does not
	// know it yet.
	sd := servicetest.New(map[string]*servicetest.Unit{"new.service": {OnDisk: true}})
	changed := map[string]bool{"file:/etc/systemd/system/new.service": true}
	chs := run(t, sd, hostEnv(), changed, item(svc("new", running, yes, false)))
	if chs[0].Err != nil {
		t.Fatal(chs[0].Err)
	}
	if !strings.HasPrefix(chs[0].Summary, "daemon-reload, enabled, running") {
		t.Errorf("summary %q", chs[0].Summary)
	}
	if got := strings.Join(sd.Calls(), "; "); got != "daemon-reload; enable new.service; daemon-reload; start new.service" {
		t.Errorf("calls: %s", got)
	}
	// Drop-ins count too; an unchanged run makes no calls.
	sd.ResetCalls()
	run(t, sd, hostEnv(), nil, item(svc("new", running, yes, false)))
	if c := sd.Calls(); len(c) != 0 {
		t.Errorf("no-op made calls: %v", c)
	}
	if _, ok := converge.IsUnitPath("/etc/systemd/system/new.service.d/override.conf"); !ok {
		t.Error("drop-in not recognised")
	}
}

func TestFailures(t *testing.T) {
	sd := servicetest.New(map[string]*servicetest.Unit{
		"masked.service": {OnDisk: true, Loaded: true, Masked: true},
		"bad.service":    {OnDisk: true, Loaded: true, FailStart: true},
		"ok.service":     {OnDisk: true, Loaded: true},
	})
	chs := run(t, sd, hostEnv(), nil,
		item(svc("missing", running, nil, false)),
		item(svc("masked", running, yes, false)),
		item(svc("bad", running, nil, false)),
		item(svc("ok", running, nil, false)),
	)
	if !errors.Is(chs[0].Err, service.ErrNotFound) {
		t.Errorf("missing: %v", chs[0].Err)
	}
	if !errors.Is(chs[1].Err, service.ErrMasked) {
		t.Errorf("masked: %v", chs[1].Err)
	}
	if chs[2].Err == nil || !strings.Contains(chs[2].Err.Error(), "job failed") {
		t.Errorf("bad: %v", chs[2].Err)
	}
	if chs[3].Err != nil || !sd.Units["ok.service"].Active {
		t.Errorf("ok: %v", chs[3].Err)
	}
}

func TestSandboxRootIsPlanOnly(t *testing.T) {
	p := service.New(service.Config{Connect: func(context.Context) (service.Bus, error) {
		t.Fatal("connected to systemd for a sandbox root")
		return nil, nil
	}})
	env := &converge.Env{Root: t.TempDir()}
	r := svc("web", running, yes, false)
	chs, err := p.Plan(context.Background(), env, &converge.Batch{Items: []converge.Item{item(r)}})
	if err != nil || !chs[0].Needed || !strings.Contains(chs[0].Summary, "not observed") {
		t.Fatalf("plan: %v %+v", err, chs)
	}
	if err := p.Apply(context.Background(), env, chs); !errors.Is(err, service.ErrNoSystemd) {
		t.Errorf("apply: %v", err)
	}
}
