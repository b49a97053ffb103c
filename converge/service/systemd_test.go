package service_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	"github.com/hivefleet/hive/converge/service"
	"github.com/hivefleet/hive/converge/service/servicetest"
	"github.com/hivefleet/hive/internal/debroot"
	"github.com/hivefleet/hive/internal/testenv"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestRealSystemd runs the provider's timeline against a real systemd
// (Debian bookworm's, booted as PID 1 in its own namespaces in a
// debootstrap root, see servicetest.BootSystemd) over its private D-Bus
// socket: daemon-reload for a new unit file, enable (the real symlink
// appears), start, drift (stopped behind hive's back), restart when
// notified, then stop and disable.
func TestRealSystemd(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.SkipShort(t)
	root := debroot.CopyWith(t, "systemd", "dbus")
	unit := "[Unit]\nDescription=hive test\n[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/true\n[Install]\nWantedBy=multi-user.target\n"
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "etc/systemd/system/hive-e2e.service"), []byte(unit), 0o644))
	sd := servicetest.BootSystemd(t, root)
	p := service.New(service.Config{Connect: sd.Connect})
	env := &converge.Env{Root: "/"} // the unit is managed through the bus, not a path
	state := func(t *testing.T) service.UnitState {
		t.Helper()
		bus, err := sd.Connect(context.Background())
		must(err)
		defer bus.Close()
		st, err := bus.Unit(context.Background(), "hive-e2e.service")
		must(err)
		return st
	}
	fp := func(t *testing.T) string {
		s := state(t)
		return fmt.Sprintf("%s %s %s", s.LoadState, s.ActiveState, s.UnitFileState)
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/hive-e2e.service")
	changed := map[string]bool{"file:/etc/systemd/system/hive-e2e.service": true}
	res := svc("hive-e2e", running, yes, false)

	// From empty: systemd has not read the unit file yet.
	if n := convergetest.ConvergeFP(t, p, env, []*hivev1.Resource{res}, changed, 1, fp); n != 1 {
		t.Fatal("nothing planned")
	}
	if s := state(t); s.ActiveState != "active" || s.UnitFileState != "enabled" {
		t.Fatalf("after converge: %+v", s)
	}
	if _, err := os.Lstat(wants); err != nil {
		t.Fatalf("enable left no symlink: %v", err)
	}
	// No-op.
	convergetest.ConvergeFP(t, p, env, []*hivev1.Resource{res}, nil, 0, fp)
	// Drift: stopped behind hive's back.
	bus, err := sd.Connect(context.Background())
	must(err)
	must(bus.Stop(context.Background(), "hive-e2e.service"))
	bus.Close()
	convergetest.ConvergeFP(t, p, env, []*hivev1.Resource{res}, nil, 1, fp)
	if s := state(t); s.ActiveState != "active" {
		t.Fatalf("after drift: %+v", s)
	}
	// Notified: restarted (a new main PID).
	pid := mainPID(t, sd)
	b := &converge.Batch{Items: []converge.Item{{Key: res.Key, Resource: res, Notified: []string{"file:/etc/hive-e2e.conf"}}}}
	chs, err := p.Plan(context.Background(), env, b)
	must(err)
	chs[0].Key, chs[0].Resource = res.Key, res
	if !strings.HasPrefix(chs[0].Summary, "restart") {
		t.Fatalf("notified plan: %q", chs[0].Summary)
	}
	must(p.Apply(context.Background(), env, chs))
	must(chs[0].Err)
	if np := mainPID(t, sd); np == pid || np == 0 {
		t.Errorf("not restarted: main pid %d → %d", pid, np)
	}
	// Remove: stopped and disabled.
	off := svc("hive-e2e", stopped, no, false)
	convergetest.ConvergeFP(t, p, env, []*hivev1.Resource{off}, nil, 1, fp)
	if s := state(t); s.ActiveState == "active" || s.UnitFileState != "disabled" {
		t.Fatalf("after remove: %+v", s)
	}
	if _, err := os.Lstat(wants); !os.IsNotExist(err) {
		t.Errorf("disable left the symlink: %v", err)
	}
	convergetest.ConvergeFP(t, p, env, []*hivev1.Resource{off}, nil, 0, fp)
}

func mainPID(t *testing.T, sd *servicetest.Booted) uint32 {
	t.Helper()
	c, err := sd.RawConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.GetServicePropertyContext(context.Background(), "hive-e2e.service", "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := p.Value.Value().(uint32)
	return v
}
