package service_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/converge/service/servicetest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestOverDBus runs the provider with its real go-systemd client over a
// real dbus-daemon, against servicetest's systemd served on that bus. (No
// real systemd: the test machines do not run it as PID 1.)
func TestOverDBus(t *testing.T) {
	sd := servicetest.New(map[string]*servicetest.Unit{
		"new.service":     {OnDisk: true},
		"running.service": {OnDisk: true, Loaded: true, Active: true, Enabled: true},
		"bad.service":     {OnDisk: true, Loaded: true, FailStart: true},
	})
	bus := servicetest.ServeDBus(t, sd)
	p := service.New(service.Config{Connect: bus.Connect})
	env := hostEnv()
	items := []*hivev1.Resource{svc("new", running, yes, false), svc("running", running, yes, true), svc("bad", running, nil, false), svc("gone", running, nil, false)}
	changed := map[string]bool{"file:/etc/systemd/system/new.service": true}
	chs, needed := convergetest.PlanOnlyFP(t, p, env, items[:3], changed, func(*testing.T) string { return sd.State() })
	// running.service is notified separately below; here it is as desired.
	if len(needed) != 2 {
		t.Fatalf("needed %d: %s", len(needed), convergetest.Describe(chs))
	}
	if err := p.Apply(t.Context(), env, needed); err != nil {
		t.Fatal(err)
	}
	if needed[0].Err != nil || !sd.Get("new.service").Active || !sd.Get("new.service").Enabled {
		t.Errorf("new: %v %+v", needed[0].Err, sd.Get("new.service"))
	}
	if needed[1].Err == nil || !strings.Contains(needed[1].Err.Error(), "job failed") {
		t.Errorf("bad: %v", needed[1].Err)
	}
	want := "daemon-reload; enable new.service; daemon-reload; start new.service; start bad.service"
	if got := strings.Join(sd.Calls(), "; "); got != want {
		t.Errorf("calls over D-Bus:\n got %s\nwant %s", got, want)
	}

	// Notified reload, and an unknown unit, over the bus.
	sd.ResetCalls()
	b := &converge.Batch{Items: []converge.Item{item(items[1], "file:/etc/running.conf"), item(items[3])}}
	chs, err := p.Plan(t.Context(), env, b)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(chs[1].Err, service.ErrNotFound) {
		t.Errorf("gone: %v", chs[1].Err)
	}
	if !chs[0].Needed {
		t.Fatal("notified unit not planned")
	}
	chs[0].Key, chs[0].Resource = b.Items[0].Key, b.Items[0].Resource
	if err := p.Apply(t.Context(), env, chs[:1]); err != nil || chs[0].Err != nil {
		t.Fatalf("apply: %v %v", err, chs[0].Err)
	}
	if got := strings.Join(sd.Calls(), "; "); got != "reload running.service" || sd.Get("running.service").Reloads != 1 {
		t.Errorf("calls %s", got)
	}
}
