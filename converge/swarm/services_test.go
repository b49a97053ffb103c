package swarm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/mount"
	dswarm "github.com/moby/moby/api/types/swarm"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/convergetest"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

func webService() *hivev1.SwarmService {
	return &hivev1.SwarmService{
		Name: "web", Image: "10.0.0.5:7480/site/web:v1", Digest: "sha256:" + strings.Repeat("ab", 32),
		Mode: "replicated", Replicas: 2, Command: []string{"-listen", ":8080"}, Entrypoint: []string{"/web"},
		Env:      map[string]string{"B": "2", "A": "1"},
		Secrets:  []*hivev1.SwarmServiceSecret{{Secret: "db-password", Target: "db.pw", Mode: 0o400}},
		Configs:  []*hivev1.SwarmServiceConfig{{Target: "/etc/web.conf", Content: "x = 1\n"}},
		Ports:    []*hivev1.SwarmServicePort{{Target: 8080, Published: 80}},
		Mounts:   []*hivev1.SwarmServiceMount{{Type: "volume", Source: "web-data", Target: "/data"}},
		Networks: []string{"app"}, Constraints: []string{"node.labels.tier==front"}, Spread: []string{"node.labels.zone"},
		Resources:   &hivev1.SwarmServiceResources{CpuLimit: 0.5, MemoryLimit: 256 << 20},
		Healthcheck: &hivev1.SwarmServiceHealthcheck{Test: []string{"CMD", "/web", "-check"}, Interval: durationpb.New(10 * time.Second), Retries: 3},
		Restart:     &hivev1.SwarmServiceRestart{Condition: "on-failure", MaxAttempts: 3},
		Update:      &hivev1.SwarmServiceUpdate{Parallelism: 1, Order: "start-first", FailureAction: "rollback"},
		Labels:      map[string]string{"team": "web"},
	}
}

// TestBuildService checks the spec hive builds from a site service: the
// pinned image, entrypoint/command mapping, sorted env, secrets and
// configs by content-derived names, mounts, placement, limits; a stable
// spec hash that changes with a secret's value; a missing secret value.
func TestBuildService(t *testing.T) {
	env := &converge.Env{Secrets: map[string][]byte{"db-password": []byte("s3cret")}}
	d, objs, err := buildService(env, webService())
	if err != nil {
		t.Fatal(err)
	}
	cs := d.spec.TaskTemplate.ContainerSpec
	if cs.Image != "10.0.0.5:7480/site/web:v1@sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("image %s", cs.Image)
	}
	if strings.Join(cs.Command, " ") != "/web" || strings.Join(cs.Args, " ") != "-listen :8080" || strings.Join(cs.Env, " ") != "A=1 B=2" {
		t.Errorf("command %v args %v env %v", cs.Command, cs.Args, cs.Env)
	}
	if len(objs) != 2 || objs[0].label != "db-password" || !strings.HasPrefix(objs[0].name, "hive-secret-db-password-") || !objs[1].config {
		t.Fatalf("objects %+v", objs)
	}
	if cs.Secrets[0].SecretName != objs[0].name || cs.Secrets[0].File.Name != "db.pw" || cs.Secrets[0].File.Mode != 0o400 {
		t.Errorf("secret ref %+v", cs.Secrets[0])
	}
	if cs.Configs[0].File.Name != "/etc/web.conf" || cs.Configs[0].File.Mode != 0o444 {
		t.Errorf("config ref %+v", cs.Configs[0].File)
	}
	if cs.Mounts[0].Type != mount.TypeVolume || cs.Mounts[0].Source != "web-data" {
		t.Errorf("mount %+v", cs.Mounts[0])
	}
	if *d.spec.Mode.Replicated.Replicas != 2 || d.spec.EndpointSpec.Ports[0].PublishMode != "ingress" || d.spec.EndpointSpec.Ports[0].Protocol != "tcp" {
		t.Errorf("mode %+v ports %+v", d.spec.Mode, d.spec.EndpointSpec.Ports)
	}
	if d.spec.TaskTemplate.Resources.Limits.NanoCPUs != 5e8 || d.spec.TaskTemplate.Placement.Preferences[0].Spread.SpreadDescriptor != "node.labels.zone" {
		t.Errorf("resources %+v placement %+v", d.spec.TaskTemplate.Resources, d.spec.TaskTemplate.Placement)
	}
	if d.spec.Labels[LabelManaged] != "true" || d.spec.Labels[LabelSpec] != d.hash || d.spec.Labels["team"] != "web" {
		t.Errorf("labels %v", d.spec.Labels)
	}
	again, _, _ := buildService(env, webService())
	if again.hash != d.hash {
		t.Error("spec hash not stable")
	}
	env.Secrets["db-password"] = []byte("rotated")
	rotated, objs2, _ := buildService(env, webService())
	if rotated.hash == d.hash || objs2[0].name == objs[0].name {
		t.Error("a new secret value must make a new swarm secret and a new spec")
	}
	delete(env.Secrets, "db-password")
	if _, _, err := buildService(env, webService()); !errors.Is(err, ErrSecret) {
		t.Errorf("missing secret: %v", err)
	}
}

// TestPlanEngine converges the engine's registry settings under a temp
// root: other daemon.json keys and mirrors are kept, the registry is added
// and dockerd reloaded once; a second run plans nothing; a TLS registry
// gets the site CA in certs.d, which needs no reload.
func TestPlanEngine(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/docker"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte(`{"log-driver": "journald", "registry-mirrors": ["https://other:5000"]}`), 0o644)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644)
	cfg := DefaultConfig()
	cfg.CAFile = ca
	cfg.ReloadCommand = []string{"kill", "-HUP", "1234"}
	p, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	rec := &convergetest.Recorder{}
	env := &converge.Env{Root: root, Runner: rec}
	run := func(reg *hivev1.ServiceRegistry) []string {
		d := &planData{}
		if err := p.planEngine(env, &hivev1.Swarm{Registry: reg}, d); err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, st := range d.steps {
			texts = append(texts, st.text)
			if err := p.do(context.Background(), env, d, st); err != nil {
				t.Fatal(err)
			}
		}
		return texts
	}
	insecure := &hivev1.ServiceRegistry{Address: "10.0.0.5:7480", Mirror: true, Insecure: true}
	if got := strings.Join(run(insecure), "|"); !strings.Contains(got, "insecure-registries 10.0.0.5:7480") || !strings.Contains(got, "reload the Docker engine") {
		t.Fatalf("first run: %s", got)
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/docker/daemon.json"))
	for _, want := range []string{`"log-driver": "journald"`, `"https://other:5000"`, `"http://10.0.0.5:7480"`, `"insecure-registries": [`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("daemon.json lacks %s:\n%s", want, b)
		}
	}
	if got := strings.Join(rec.Lines(), "|"); got != "kill -HUP 1234" {
		t.Errorf("commands %q", got)
	}
	if got := run(insecure); len(got) != 0 {
		t.Errorf("second run planned %v", got)
	}
	tls := &hivev1.ServiceRegistry{Address: "repo.site:7480"}
	if got := strings.Join(run(tls), "|"); !strings.Contains(got, "certs.d/repo.site:7480/ca.crt") || strings.Contains(got, "reload the Docker") {
		t.Fatalf("TLS registry: %s", got)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/docker/certs.d/repo.site:7480/ca.crt")); !strings.Contains(string(b), "MIIB") {
		t.Errorf("ca.crt %q", b)
	}
	if len(rec.Lines()) != 1 {
		t.Errorf("reloaded again: %v", rec.Lines())
	}
	os.WriteFile(filepath.Join(root, "etc/docker/daemon.json"), []byte("not json"), 0o644)
	if err := p.planEngine(env, &hivev1.Swarm{Registry: insecure}, &planData{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("broken daemon.json: %v", err)
	}
}

// TestServiceDiff: equal label, image and replicas: no update; a new spec
// hash, a hand-changed image or a hand scale: update, saying why.
func TestServiceDiff(t *testing.T) {
	env := &converge.Env{Secrets: map[string][]byte{"db-password": []byte("s3cret")}}
	d, _, err := buildService(env, webService())
	if err != nil {
		t.Fatal(err)
	}
	cur := dswarm.Service{Spec: d.spec}
	if got := serviceDiff(cur, d); got != "" {
		t.Errorf("same service: %q", got)
	}
	cs := *d.spec.TaskTemplate.ContainerSpec
	cs.Image = "other:v0"
	cur.Spec.TaskTemplate.ContainerSpec = &cs
	if got := serviceDiff(cur, d); !strings.Contains(got, "changed by hand") {
		t.Errorf("hand image: %q", got)
	}
	cur = dswarm.Service{Spec: d.spec}
	five := uint64(5)
	cur.Spec.Mode = dswarm.ServiceMode{Replicated: &dswarm.ReplicatedService{Replicas: &five}}
	if got := serviceDiff(cur, d); !strings.Contains(got, "scaled by hand to 5") {
		t.Errorf("hand scale: %q", got)
	}
	cur = dswarm.Service{Spec: d.spec}
	cur.Spec.Labels = map[string]string{LabelManaged: "true", LabelSpec: "old"}
	if got := serviceDiff(cur, d); got != "spec changed" {
		t.Errorf("new spec: %q", got)
	}
}
