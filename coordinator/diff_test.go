package coordinator

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

func parseSite(t *testing.T, src string) *hivev1.Site {
	t.Helper()
	s, err := site.Parse("site.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDiffIgnoresSourcePositions: a blank line at the top of the site file
// moves every resource's source position, which is no change.
func TestDiffIgnoresSourcePositions(t *testing.T) {
	raw, err := os.ReadFile("../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := parseSite(t, string(raw)), parseSite(t, "\n"+string(raw))
	if a.GetRoles()[0].GetResources()[0].GetSource() == b.GetRoles()[0].GetResources()[0].GetSource() {
		t.Fatalf("test premise: sources should differ (%q)", a.GetRoles()[0].GetResources()[0].GetSource())
	}
	if d := DiffSites(a, b); len(d) != 0 {
		t.Fatalf("diff of a layout-only change = %v", d)
	}
}

// TestDiffGenerationsLayoutOnly pushes the example site, then the same file
// with a blank line at the top and one package added: the layout-only push
// is unchanged, and the diff of the next one names only the added package.
func TestDiffGenerationsLayoutOnly(t *testing.T) {
	raw, err := os.ReadFile("../deploy/examples/site.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := startDev(t)
	c := dialPlain(t, n.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p1, err := c.Push(ctx, &hivev1.PushRequest{Site: parseSite(t, string(raw))})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Push(ctx, &hivev1.PushRequest{Site: parseSite(t, "\n"+string(raw)), BaseGeneration: p1.GetGeneration()})
	if err != nil || !p2.GetUnchanged() {
		t.Fatalf("layout-only push = %v, %v; want unchanged", p2, err)
	}
	moved := strings.Replace("\n"+string(raw), "      - chrony\n", "      - chrony\n      - ntpdate\n", 1)
	if moved == "\n"+string(raw) {
		t.Fatal("test premise: the example site lists chrony")
	}
	p3, err := c.Push(ctx, &hivev1.PushRequest{Site: parseSite(t, moved), BaseGeneration: p1.GetGeneration()})
	if err != nil || p3.GetGeneration() != 2 {
		t.Fatalf("push 2 = %v, %v", p3, err)
	}
	d, err := c.DiffGenerations(ctx, &hivev1.DiffGenerationsRequest{From: 1, To: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetChanges()) != 1 || d.GetChanges()[0].GetKey() != "package:ntpdate" || d.GetChanges()[0].GetKind() != hivev1.ChangeKind_CHANGE_KIND_ADDED {
		t.Fatalf("diff = %v; want only package:ntpdate added", d.GetChanges())
	}
	if strings.Contains(d.GetChanges()[0].GetDiff(), "site.yaml:") {
		t.Fatalf("diff shows a source position:\n%s", d.GetChanges()[0].GetDiff())
	}
}
