package coordinator

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivefleet/hive/pki"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

const sourceSite = `site: src
selectors:
  - roles: [web]
roles:
  web:
    files:
      - path: /etc/motd
        content: "%s\n"
`

// TestPushSourceMustMatchSite: a push whose source text is not the pushed
// site (issue 11 finding 10: pull then showed an admin text that no agent
// ever got) is refused with InvalidArgument saying where they differ, and
// nothing is stored. Before, the pair was stored as given. A real TLS
// server, an admin certificate.
func TestPushSourceMustMatchSite(t *testing.T) {
	nodes, tc := newCluster(t, 1, clusterOpts{})
	n := leader(t, nodes)
	admin := tc.dial(t, n.GRPCAddr(), pki.KindAdmin, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	text := func(word string) []byte { return []byte(strings.ReplaceAll(sourceSite, "%s", word)) }
	parse := func(name string, b []byte) *hivev1.Site {
		s, err := site.Parse(name, b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := parse("site.yaml", text("hello"))

	for _, c := range []struct {
		name     string
		req      *hivev1.PushRequest
		wantMsgs []string
	}{
		{"other text", &hivev1.PushRequest{Site: good, SourceName: "site.yaml", Source: text("innocent")},
			[]string{"source and site disagree", `role "web": resource file:/etc/motd at site.yaml:7:9`}},
		{"other name", &hivev1.PushRequest{Site: good, SourceName: "elsewhere.yaml", Source: text("hello")},
			[]string{"source and site disagree", "elsewhere.yaml:7:9"}},
		{"not a site", &hivev1.PushRequest{Site: good, SourceName: "site.yaml", Source: []byte("roles: [")},
			[]string{"source does not parse", "site.yaml:"}},
		{"more roles", &hivev1.PushRequest{Site: good, SourceName: "site.yaml", Source: []byte(string(text("hello")) + "  db: {}\n")},
			[]string{"roles: source has 2, site 1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := admin.Push(ctx, c.req)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("push = %v, want InvalidArgument", err)
			}
			for _, m := range c.wantMsgs {
				if !strings.Contains(status.Convert(err).Message(), m) {
					t.Errorf("message %q does not contain %q", status.Convert(err).Message(), m)
				}
			}
			if g := n.fsm.Store().CurrentNumber(); g != 0 {
				t.Fatalf("a refused push stored generation %d", g)
			}
		})
	}

	// The matching pair is accepted, and what pull reads back parses to
	// the generation's site.
	p, err := admin.Push(ctx, &hivev1.PushRequest{Site: good, SourceName: "site.yaml", Source: text("hello")})
	if err != nil {
		t.Fatal(err)
	}
	g, err := admin.GetGeneration(ctx, &hivev1.GetGenerationRequest{Number: p.GetGeneration()})
	if err != nil {
		t.Fatal(err)
	}
	if back := parse(g.GetGeneration().GetSourceName(), g.GetGeneration().GetSource()); !proto.Equal(back, g.GetGeneration().GetSite()) {
		t.Fatal("pulled source does not parse to the generation's site")
	}
	// A push without source text carries nothing that could disagree.
	if _, err := admin.Push(ctx, &hivev1.PushRequest{Site: parse("site.yaml", text("bye")), BaseGeneration: p.GetGeneration()}); err != nil {
		t.Fatalf("push without source: %v", err)
	}
}
