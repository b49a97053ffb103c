package converge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivefleet/hive/converge"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// fakeProvider keeps its desired state in a map; it records calls.
type fakeProvider struct {
	kind  string
	state map[string]string // key → applied value
	fail  map[string]bool   // keys whose apply fails
	calls *[]string
}

func (f *fakeProvider) Kind() string { return f.kind }

func want(r *hivev1.Resource) string {
	switch k := r.GetKind().(type) {
	case *hivev1.Resource_File:
		return k.File.GetContent()
	case *hivev1.Resource_Package:
		return k.Package.GetVersion()
	case *hivev1.Resource_Service:
		return k.Service.GetState().String()
	case *hivev1.Resource_Repo:
		return k.Repo.GetUrl()
	}
	return ""
}

func (f *fakeProvider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	var keys []string
	var out []*converge.Change
	for _, it := range b.Items {
		keys = append(keys, it.Key)
		c := &converge.Change{}
		if f.state[it.Key] != want(it.Resource) || len(it.Notified) > 0 {
			c.Needed = true
			c.Summary = fmt.Sprintf("set %s to %q", it.Key, want(it.Resource))
			if len(it.Notified) > 0 {
				c.Summary = "restart, notified by " + strings.Join(it.Notified, ",")
			}
		}
		out = append(out, c)
	}
	*f.calls = append(*f.calls, "plan "+strings.Join(keys, ","))
	return out, nil
}

func (f *fakeProvider) Apply(ctx context.Context, env *converge.Env, chs []*converge.Change) error {
	var keys []string
	for _, c := range chs {
		keys = append(keys, c.Key)
		if f.fail[c.Key] {
			c.Err = errors.New("boom")
			continue
		}
		f.state[c.Key] = want(c.Resource)
	}
	*f.calls = append(*f.calls, "apply "+strings.Join(keys, ","))
	return nil
}

func file(path, content string, requires ...string) *hivev1.Resource {
	return &hivev1.Resource{Key: "file:" + path, Requires: requires, Kind: &hivev1.Resource_File{File: &hivev1.File{Path: path, Content: content}}}
}
func pkg(name, version string) *hivev1.Resource {
	return &hivev1.Resource{Key: "package:" + name, Kind: &hivev1.Resource_Package{Package: &hivev1.Package{Name: name, Version: version}}}
}
func repo(name string) *hivev1.Resource {
	return &hivev1.Resource{Key: "repo:" + name, Kind: &hivev1.Resource_Repo{Repo: &hivev1.Repo{Name: name, Url: "http://x/" + name}}}
}
func svc(name string) *hivev1.Resource {
	return &hivev1.Resource{Key: "service:" + name, Kind: &hivev1.Resource_Service{Service: &hivev1.Service{Name: name, State: hivev1.ServiceState_SERVICE_STATE_RUNNING}}}
}

type fixture struct {
	calls []string
	ps    map[string]*fakeProvider
	eng   *converge.Engine
}

func newFixture(t *testing.T, cfg converge.Config) *fixture {
	t.Helper()
	fx := &fixture{ps: map[string]*fakeProvider{}}
	reg, _ := converge.NewRegistry()
	for _, k := range []string{"repo", "package", "file", "service"} {
		p := &fakeProvider{kind: k, state: map[string]string{}, fail: map[string]bool{}, calls: &fx.calls}
		fx.ps[k] = p
		if err := reg.Register(p); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	cfg.Runner = converge.ExecRunner{}
	cfg.Family = converge.FamilyDebian
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	eng, err := converge.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	fx.eng = eng
	return fx
}

func outcomes(rep *converge.Report) string {
	var s []string
	for _, r := range rep.Results {
		s = append(s, r.GetKey()+"="+strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	}
	return strings.Join(s, " ")
}

func TestRunOrderBatchingAndNoop(t *testing.T) {
	fx := newFixture(t, converge.Config{})
	s := svc("nginx")
	cfg := file("/etc/nginx/nginx.conf", "x")
	cfg.Notify = []string{"service:nginx"}
	st := &hivev1.NodeState{Resources: []*hivev1.Resource{
		s, cfg, pkg("nginx", "1"), pkg("curl", ""), repo("hive"), file("/srv/a", "a"),
	}}
	rep, err := fx.eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(fx.calls, "; ")
	wantCalls := "plan repo:hive; apply repo:hive; plan file:/srv/a; apply file:/srv/a; " +
		"plan package:nginx,package:curl; apply package:nginx; " +
		"plan file:/etc/nginx/nginx.conf; apply file:/etc/nginx/nginx.conf; plan service:nginx; apply service:nginx"
	if got != wantCalls {
		t.Errorf("calls:\n got %s\nwant %s", got, wantCalls)
	}
	if o := outcomes(rep); o != "service:nginx=CHANGED file:/etc/nginx/nginx.conf=CHANGED package:nginx=CHANGED package:curl=OK repo:hive=CHANGED file:/srv/a=CHANGED" {
		t.Errorf("outcomes %s", o)
	}
	if len(rep.Notifications) != 1 || rep.Notifications[0].To != "service:nginx" {
		t.Errorf("notifications %+v", rep.Notifications)
	}
	if !strings.Contains(rep.Results[0].GetMessage(), "notified by file:/etc/nginx/nginx.conf") {
		t.Errorf("service message %q", rep.Results[0].GetMessage())
	}
	// Second run: nothing to do, no apply calls, no notification.
	fx.calls = nil
	rep, err = fx.eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := rep.Count(hivev1.Outcome_OUTCOME_OK); n != 6 {
		t.Errorf("second run: %s", outcomes(rep))
	}
	for _, c := range fx.calls {
		if strings.HasPrefix(c, "apply") {
			t.Errorf("second run applied: %s", c)
		}
	}
}

func TestFailureSkipsOnlyDependents(t *testing.T) {
	fx := newFixture(t, converge.Config{})
	fx.ps["package"].fail["package:nginx"] = true
	st := &hivev1.NodeState{Resources: []*hivev1.Resource{
		pkg("nginx", "1"), pkg("curl", "2"), file("/etc/nginx/nginx.conf", "x"), svc("nginx"),
		file("/etc/motd", "hi"), file("/etc/other/x", "y", "file:/etc/nginx/nginx.conf"),
	}}
	rep, err := fx.eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := "package:nginx=FAILED package:curl=CHANGED file:/etc/nginx/nginx.conf=SKIPPED service:nginx=SKIPPED file:/etc/motd=CHANGED file:/etc/other/x=SKIPPED"
	if o := outcomes(rep); o != want {
		t.Errorf("outcomes\n got %s\nwant %s", o, want)
	}
	if m := rep.Results[2].GetMessage(); m != "requires package:nginx, which failed" {
		t.Errorf("skip message %q", m)
	}
	if m := rep.Results[5].GetMessage(); m != "requires file:/etc/nginx/nginx.conf, which was skipped" {
		t.Errorf("skip message %q", m)
	}
	if m := rep.Results[0].GetMessage(); m != "boom" {
		t.Errorf("fail message %q", m)
	}
}

func TestDryRunAndPlanOnly(t *testing.T) {
	fx := newFixture(t, converge.Config{})
	a := file("/etc/a", "x")
	a.Notify = []string{"service:a"}
	st := &hivev1.NodeState{Resources: []*hivev1.Resource{pkg("a", "1"), a, svc("a")}}
	rep, err := fx.eng.Run(context.Background(), st, converge.RunOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(rep); o != "package:a=PLANNED file:/etc/a=PLANNED service:a=PLANNED" {
		t.Errorf("dry run: %s", o)
	}
	for _, c := range fx.calls {
		if strings.HasPrefix(c, "apply") {
			t.Errorf("dry run applied: %s", c)
		}
	}
	if !strings.Contains(rep.Results[2].GetMessage(), "notified by file:/etc/a") {
		t.Errorf("dry run does not show notification: %q", rep.Results[2].GetMessage())
	}

	fx2 := newFixture(t, converge.Config{PlanOnly: map[string]bool{"package": true, "service": true}})
	rep, err = fx2.eng.Run(context.Background(), st, converge.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o := outcomes(rep); o != "package:a=PLANNED file:/etc/a=CHANGED service:a=PLANNED" {
		t.Errorf("plan only: %s", o)
	}
}

func TestValidation(t *testing.T) {
	fx := newFixture(t, converge.Config{})
	ctx := context.Background()
	a, b := file("/a", "", "file:/b"), file("/b", "", "file:/a")
	_, err := fx.eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{a, b}}, converge.RunOptions{})
	if !errors.Is(err, converge.ErrCycle) || !strings.Contains(err.Error(), "file:/a → file:/b → file:/a") {
		t.Errorf("cycle: %v", err)
	}
	_, err = fx.eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{file("/a", "", "package:zz")}}, converge.RunOptions{})
	if !errors.Is(err, converge.ErrUnknownRequire) {
		t.Errorf("unknown require: %v", err)
	}
	_, err = fx.eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{file("/a", ""), file("/a", "")}}, converge.RunOptions{})
	if !errors.Is(err, converge.ErrDuplicateKey) {
		t.Errorf("duplicate: %v", err)
	}
	fw := &hivev1.Resource{Key: "firewall:filter", Kind: &hivev1.Resource_Firewall{Firewall: &hivev1.Firewall{}}}
	_, err = fx.eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{fw}}, converge.RunOptions{})
	if !errors.Is(err, converge.ErrNoProvider) {
		t.Errorf("no provider: %v", err)
	}
	if len(fx.calls) != 0 {
		t.Errorf("invalid state ran providers: %v", fx.calls)
	}
	// An implicit edge that would close a cycle is dropped, not an error:
	// package nginx explicitly requires its config file.
	p := pkg("nginx", "")
	p.Requires = []string{"file:/etc/nginx/nginx.conf"}
	g, err := fx.eng.Validate(&hivev1.NodeState{Resources: []*hivev1.Resource{p, file("/etc/nginx/nginx.conf", "")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Waves) != 2 || g.Waves[0][0] != "file:/etc/nginx/nginx.conf" {
		t.Errorf("waves %v", g.Waves)
	}
}

func TestCancelledRunSkips(t *testing.T) {
	fx := newFixture(t, converge.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rep, err := fx.eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{file("/a", "x")}}, converge.RunOptions{})
	if !errors.Is(err, context.Canceled) || rep == nil || rep.Results[0].GetOutcome() != hivev1.Outcome_OUTCOME_SKIPPED {
		t.Fatalf("err %v rep %v", err, rep)
	}
}

func TestMaskSecrets(t *testing.T) {
	s := map[string][]byte{"db": []byte("hunter22"), "key": []byte("-----BEGIN-----\nAAAABBBB\n-----END-----"), "x": []byte("ab")}
	got := converge.MaskSecrets("password=hunter22\n+AAAABBBB\nab", s)
	if got != "password=<secret:db>\n+<secret:key>\nab" {
		t.Errorf("got %q", got)
	}
}

func TestSecureJoin(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc", "real"), 0o755))
	must(os.Symlink("/etc/real", filepath.Join(root, "etc", "abs")))
	must(os.Symlink("../../../../..", filepath.Join(root, "etc", "up")))
	must(os.Symlink("real", filepath.Join(root, "etc", "rel")))
	for _, tc := range []struct{ in, want, err string }{
		{"/etc/x", root + "/etc/x", ""},
		{"/etc/abs/x", root + "/etc/real/x", ""},
		{"/etc/rel/x", root + "/etc/real/x", ""},
		{"/etc/up/x", "", "escapes"},
		{"/etc/../x", "", "escapes"},
		{"etc/x", "", "escapes"},
	} {
		got, err := converge.SecureJoin(root, tc.in)
		if tc.err != "" {
			if err == nil || !errors.Is(err, converge.ErrPathEscape) {
				t.Errorf("%s: err %v, want escape", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q %v want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestFamilyFromOSRelease(t *testing.T) {
	for in, want := range map[string]converge.Family{
		"ID=debian\n": converge.FamilyDebian,
		"ID=rocky\nID_LIKE=\"rhel centos fedora\"\n": converge.FamilyRHEL,
		"ID=ubuntu\nID_LIKE=debian\n":                converge.FamilyDebian,
		"ID=alpine\n":                                converge.FamilyUnknown,
	} {
		if got := converge.FamilyFromOSRelease([]byte(in)); got != want {
			t.Errorf("%q: %q want %q", in, got, want)
		}
	}
}

// prunerProvider is a fakeProvider that also prunes: every key it applied
// that is no longer present is removed.
type prunerProvider struct{ *fakeProvider }

func (p prunerProvider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	keep := map[string]bool{}
	for _, it := range present {
		keep[it.Key] = true
	}
	var out []*converge.Change
	for k := range p.state {
		if !keep[k] {
			out = append(out, &converge.Change{Key: k, Needed: true, Summary: "remove " + k, Data: "prune"})
		}
	}
	return out, nil
}

func (p prunerProvider) Apply(ctx context.Context, env *converge.Env, chs []*converge.Change) error {
	var rest []*converge.Change
	for _, c := range chs {
		if c.Data == "prune" {
			delete(p.state, c.Key)
			continue
		}
		rest = append(rest, c)
	}
	return p.fakeProvider.Apply(ctx, env, rest)
}

func TestPrune(t *testing.T) {
	var calls []string
	fp := &fakeProvider{kind: "repo", state: map[string]string{}, fail: map[string]bool{}, calls: &calls}
	reg, _ := converge.NewRegistry(prunerProvider{fp})
	eng, err := converge.New(converge.Config{Root: t.TempDir(), Runner: converge.ExecRunner{}, Logger: slog.New(slog.DiscardHandler)}, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := eng.Run(ctx, &hivev1.NodeState{Resources: []*hivev1.Resource{repo("a"), repo("b")}}, converge.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	st := &hivev1.NodeState{Resources: []*hivev1.Resource{repo("a")}}
	rep, err := eng.Run(ctx, st, converge.RunOptions{DryRun: true})
	if err != nil || outcomes(rep) != "repo:a=OK repo:b=PLANNED" || len(fp.state) != 2 {
		t.Fatalf("dry run: %s %v state %v", outcomes(rep), err, fp.state)
	}
	rep, err = eng.Run(ctx, st, converge.RunOptions{})
	if err != nil || outcomes(rep) != "repo:a=OK repo:b=CHANGED" || rep.Results[1].GetMessage() != "remove repo:b" {
		t.Fatalf("run: %s %v", outcomes(rep), err)
	}
	if _, ok := fp.state["repo:b"]; ok {
		t.Error("not pruned")
	}
	rep, _ = eng.Run(ctx, st, converge.RunOptions{})
	if outcomes(rep) != "repo:a=OK" {
		t.Errorf("third run: %s", outcomes(rep))
	}
}

func FuzzSecureJoin(f *testing.F) {
	root := f.TempDir()
	if err := os.Symlink("../../..", filepath.Join(root, "up")); err != nil {
		f.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(root, "abs")); err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/etc/x", "/up/x", "/abs/../../x", "/a/./b", "//x", "/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := converge.SecureJoin(root, p)
		if err != nil {
			return
		}
		if got != root && !strings.HasPrefix(got, root+"/") {
			t.Fatalf("SecureJoin(%q) = %q escapes %q", p, got, root)
		}
	})
}

// BenchmarkEngineNoop measures the engine's own cost (graph, waves,
// results) for a no-op run of 100 resources of four kinds with in-memory
// providers; BenchmarkNoopFiles in converge/file measures real files.
func BenchmarkEngineNoop(b *testing.B) {
	var calls []string
	reg, _ := converge.NewRegistry()
	ps := map[string]*fakeProvider{}
	for _, k := range []string{"repo", "package", "file", "service"} {
		ps[k] = &fakeProvider{kind: k, state: map[string]string{}, fail: map[string]bool{}, calls: &calls}
		reg.Register(ps[k]) //nolint:errcheck
	}
	eng, _ := converge.New(converge.Config{Root: b.TempDir(), Runner: converge.ExecRunner{}, Family: converge.FamilyDebian,
		Logger: slog.New(slog.DiscardHandler)}, reg)
	st := &hivev1.NodeState{}
	for i := range 25 {
		st.Resources = append(st.Resources, repo(fmt.Sprint("r", i)), pkg(fmt.Sprint("p", i), "1"),
			file(fmt.Sprintf("/etc/p%d/c.conf", i), "x"), svc(fmt.Sprint("p", i)))
	}
	ctx := context.Background()
	if _, err := eng.Run(ctx, st, converge.RunOptions{}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		calls = calls[:0]
		rep, err := eng.Run(ctx, st, converge.RunOptions{})
		if err != nil || rep.Count(hivev1.Outcome_OUTCOME_OK) != 100 {
			b.Fatalf("not a no-op: %v", err)
		}
	}
}

// keeperProvider reports, without applying, a key it keeps on purpose.
type keeperProvider struct{ *fakeProvider }

func (p keeperProvider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	return []*converge.Change{{Key: "repo:kept", Summary: "kept: data stays"}}, nil
}

func (p keeperProvider) Apply(ctx context.Context, env *converge.Env, chs []*converge.Change) error {
	for _, c := range chs {
		if c.Key == "repo:kept" {
			return errors.New("a change that is not needed was applied")
		}
	}
	return p.fakeProvider.Apply(ctx, env, chs)
}

// TestPruneKeepReportsOK: a prune change with Needed false is reported OK
// with its summary, never applied (a volume removed from the site).
func TestPruneKeepReportsOK(t *testing.T) {
	var calls []string
	fp := &fakeProvider{kind: "repo", state: map[string]string{}, fail: map[string]bool{}, calls: &calls}
	reg, _ := converge.NewRegistry(keeperProvider{fp})
	eng, err := converge.New(converge.Config{Root: t.TempDir(), Runner: converge.ExecRunner{}, Logger: slog.New(slog.DiscardHandler)}, reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{true, false} {
		rep, err := eng.Run(context.Background(), &hivev1.NodeState{Resources: []*hivev1.Resource{repo("a")}}, converge.RunOptions{DryRun: dry})
		if err != nil || outcomes(rep) != "repo:a="+map[bool]string{true: "PLANNED", false: "CHANGED"}[dry]+" repo:kept=OK" {
			t.Fatalf("dry=%v: %s %v", dry, outcomes(rep), err)
		}
		if r := rep.Results[1]; r.GetMessage() != "kept: data stays" || r.GetDrift() {
			t.Errorf("kept result %v", r)
		}
	}
}
