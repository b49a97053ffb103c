package ctl

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// TestPullHeaderRoundTrip: the header records the generation, is parsed
// back, changes neither the site nor its hash, and a malformed one is an
// error with the file position.
func TestPullHeaderRoundTrip(t *testing.T) {
	text := "site: demo\nroles:\n  base:\n    packages: [htop]\nselectors:\n  - roles: [base]\n"
	g := &hivev1.Generation{Number: 7, Sha256: strings.Repeat("ab", 32), Author: "alice \"the\" admin\n", Time: timestamppb.New(time.Date(2026, 12, 3, 11, 2, 3, 0, time.UTC))}
	full := append(pullHeader(g), text...)
	if n := bytes.Count(pullHeader(g), []byte("\n")); n != 2 {
		t.Fatalf("header has %d lines: %q", n, pullHeader(g))
	}
	from, body, err := splitPullHeader("s.yaml", full)
	if err != nil || from == nil || from.Generation != 7 || from.Author != "alice \"the\" admin\n" || from.SHA256 != g.Sha256 || from.Time != "2026-12-03T11:02:03Z" {
		t.Fatalf("split: %+v %v", from, err)
	}
	if string(body) != text {
		t.Fatalf("body %q", body)
	}
	a, err := site.Parse("s.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	b, err := site.Parse("s.yaml", full)
	if err != nil {
		t.Fatal(err)
	}
	if site.Hash(a) != site.Hash(b) {
		t.Fatal("the header changed the site hash")
	}
	if from, body, err := splitPullHeader("s.yaml", []byte(text)); from != nil || err != nil || string(body) != text {
		t.Fatalf("no header: %v %v", from, err)
	}
	if _, _, err := splitPullHeader("s.yaml", []byte("# hive-pull: generation=x\n"+text)); err == nil || !strings.HasPrefix(err.Error(), "s.yaml:1:1: pull header:") {
		t.Fatalf("bad header: %v", err)
	}
}

var planIDRE = regexp.MustCompile(`plan (p[0-9a-f]{12}) of`)

// TestPlanPushPlanAndPulledFile runs against a real --dev coordinator
// (no agents): plan keeps the content and push --plan commits it; push
// --plan after another push is refused; a pulled file pushed after someone
// else pushed is refused with who pushed what, and --force pushes it.
func TestPlanPushPlanAndPulledFile(t *testing.T) {
	clearEnv(t)
	addr := startCoordinator(t, "--dev", "--name", "c1")
	conn := []string{"--dev", "--addr", addr}
	file := siteFile(t)
	if r := run(t, "", append([]string{"push", file, "-m", "first"}, conn...)...); r.code != 0 {
		t.Fatalf("push: %+v", r)
	}
	changed := filepath.Join(t.TempDir(), "site.yaml")
	data := strings.Replace(string(mustRead(t, file)), "      - chrony\n", "      - chrony\n      - htop\n", 1)
	if err := os.WriteFile(changed, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}

	// Plan, then push exactly the plan.
	r := run(t, "", append([]string{"plan", changed, "--timeout", "2s"}, conn...)...)
	m := planIDRE.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil || !strings.Contains(r.stdout, "on generation 1") || !strings.Contains(r.stdout, "0 node(s)") {
		t.Fatalf("plan: %+v", r)
	}
	r = run(t, "", append([]string{"plan", changed, "-o", "json"}, conn...)...)
	var pj planJSON
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pj) != nil || pj.BaseGeneration != 1 || len(pj.SHA256) != 64 || pj.ID == "" {
		t.Fatalf("plan json: %+v", r)
	}
	if r := run(t, "", append([]string{"push", "--plan", m[1], changed}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "leave out") {
		t.Fatalf("push --plan with a file: %+v", r)
	}
	if r := run(t, "", append([]string{"push", "--plan", m[1], "-m", "planned"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 2") {
		t.Fatalf("push --plan: %+v", r)
	}
	// The second plan was made on generation 1 too: the base moved.
	r = run(t, "", append([]string{"push", "--plan", pj.ID}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "was made on generation 1, but generation 2 is current") || !strings.Contains(r.stderr, `generation 2 pushed by dev at `) || !strings.Contains(r.stderr, `"planned"`) {
		t.Fatalf("stale push --plan: %+v", r)
	}
	if r := run(t, "", append([]string{"push", "--plan", "pnothere"}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, `plan "pnothere" is not known`) {
		t.Fatalf("unknown plan: %+v", r)
	}

	// Pull, someone else pushes, push of the pulled file is refused.
	pulled := filepath.Join(t.TempDir(), "pulled.yaml")
	if r := run(t, "", append([]string{"pull", "--out", pulled}, conn...)...); r.code != 0 {
		t.Fatalf("pull: %+v", r)
	}
	if !strings.HasPrefix(string(mustRead(t, pulled)), "# hive-pull: generation=2 ") {
		t.Fatalf("pulled file: %s", mustRead(t, pulled))
	}
	// Pushing the pulled file unchanged changes nothing (same hash).
	if r := run(t, "", append([]string{"push", pulled}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "unchanged: generation 2") {
		t.Fatalf("push of the pulled file: %+v", r)
	}
	if r := run(t, "", append([]string{"push", file, "-m", "bob's change"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 3") {
		t.Fatalf("other push: %+v", r)
	}
	edited := strings.Replace(string(mustRead(t, pulled)), "      - htop\n", "      - htop\n      - jq\n", 1)
	if err := os.WriteFile(pulled, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	r = run(t, "", append([]string{"push", pulled, "-m", "mine"}, conn...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "was pulled from generation 2, but generation 3 is current") ||
		!strings.Contains(r.stderr, `generation 3 pushed by dev at `) || !strings.Contains(r.stderr, `"bob's change"`) {
		t.Fatalf("stale pulled push: %+v", r)
	}
	if r := run(t, "", append([]string{"plan", pulled}, conn...)...); r.code != 1 || !strings.Contains(r.stderr, "was pulled from generation 2") {
		t.Fatalf("stale pulled plan: %+v", r)
	}
	if r := run(t, "", append([]string{"push", pulled, "-m", "mine", "--force"}, conn...)...); r.code != 0 || !strings.Contains(r.stdout, "generation 4") {
		t.Fatalf("forced push: %+v", r)
	}
	// The generation keeps the text without the header.
	r = run(t, "", append([]string{"pull", "--no-header"}, conn...)...)
	if r.code != 0 || strings.Contains(r.stdout, pullHeaderPrefix) || !strings.Contains(r.stdout, "      - jq\n") {
		t.Fatalf("pull after forced push: %+v", r)
	}
}

func TestWritePlan(t *testing.T) {
	resp := &hivev1.PlanResponse{
		Id: "p0123456789ab", BaseGeneration: 4, Sha256: strings.Repeat("c", 64), Expires: timestamppb.New(time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)),
		Nodes: []*hivev1.PlanNode{
			{Name: "web-2", State: hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED, Results: []*hivev1.ResourceResult{{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_OK}}},
			{Name: "web-1", State: hivev1.PlanNodeState_PLAN_NODE_STATE_ANSWERED, Took: durationpb.New(40 * time.Millisecond), Results: []*hivev1.ResourceResult{
				{Key: "file:/etc/motd", Outcome: hivev1.Outcome_OUTCOME_PLANNED, Message: "content differs", Diff: "-a\n+b\n"},
				{Key: "package:htop", Outcome: hivev1.Outcome_OUTCOME_OK},
			}},
			{Name: "db-1", State: hivev1.PlanNodeState_PLAN_NODE_STATE_OFFLINE, LastGeneration: 3},
			{Name: "db-2", State: hivev1.PlanNodeState_PLAN_NODE_STATE_NO_ANSWER, LastGeneration: 4, Coordinator: "c2"},
			{Name: "lb-1", State: hivev1.PlanNodeState_PLAN_NODE_STATE_RENDER_ERROR, Error: "conflict"},
		},
	}
	var b bytes.Buffer
	if err := writePlan(&b, planToJSON(resp, time.Second), "site.yaml"); err != nil {
		t.Fatal(err)
	}
	want := `plan p0123456789ab of site.yaml on generation 4, sha256 cccccccccccc, kept until 12:00:00 UTC
db-1: offline: last known state from generation 3
db-2: no answer in time (watching c2): last known state from generation 4
lb-1: cannot render the planned site: conflict

web-1: 1 change(s)
  ~ file:/etc/motd  content differs
      -a
      +b
web-2: unchanged

5 node(s): 1 with changes (1 resource(s)), 1 unchanged, 0 failing, 1 offline, 1 no answer, 1 render error(s); 1s
push exactly this with: hivectl push --plan p0123456789ab -m MESSAGE
`
	if b.String() != want {
		t.Fatalf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
