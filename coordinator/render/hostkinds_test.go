package render

import (
	"errors"
	"testing"

	"github.com/hivefleet/hive/coordinator/keyring"
	"github.com/hivefleet/hive/coordinator/state"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// TestHostKinds: a command's secrets reach the nodes that run it (and no
// other), and one sysctl defined differently by two roles of a node is a
// conflict.
func TestHostKinds(t *testing.T) {
	sc := func(v string) *hivev1.Resource {
		return &hivev1.Resource{Key: "sysctl:net.ipv4.ip_forward", Kind: &hivev1.Resource_Sysctl{Sysctl: &hivev1.Sysctl{Key: "net.ipv4.ip_forward", Value: v}}}
	}
	cmd := &hivev1.Resource{Key: "command:init", Kind: &hivev1.Resource_Command{Command: &hivev1.GuardedCommand{Name: "init", Shell: "true", Creates: "/x", Secrets: []string{"token"}}}}
	s := &hivev1.Site{
		Roles: []*hivev1.Role{
			{Name: "a", Resources: []*hivev1.Resource{sc("1"), cmd}},
			{Name: "b", Resources: []*hivev1.Resource{sc("0")}},
			{Name: "c", Resources: []*hivev1.Resource{sc("1")}},
		},
		Selectors: []*hivev1.Selector{{Names: []string{"ab"}, Roles: []string{"a", "b"}}, {Names: []string{"ac"}, Roles: []string{"a", "c"}}, {Names: []string{"c"}, Roles: []string{"c"}}},
	}
	kr, err := keyring.New()
	if err != nil {
		t.Fatal(err)
	}
	st := state.New()
	st.Push(t0, &hivev1.PushCommand{Generation: &hivev1.Generation{Sha256: "s", Site: s}})
	sealed, id, err := kr.Seal("token", []byte("tok"))
	if err != nil {
		t.Fatal(err)
	}
	st.SetSecret(t0, &hivev1.SecretSetCommand{Name: "token", Sealed: sealed, KeyId: id})
	r := New(kr)
	var ce *ConflictError
	if _, err := r.Render(st, Facts{Name: "ab"}); !errors.As(err, &ce) || ce.Key != "sysctl:net.ipv4.ip_forward" {
		t.Fatalf("conflict = %v", err)
	}
	out, err := r.Render(st, Facts{Name: "ac"})
	if err != nil {
		t.Fatal(err)
	}
	if string(out.State.GetSecrets()["token"]) != "tok" || len(out.State.GetResources()) != 2 {
		t.Fatalf("ac: secrets %v, resources %v", out.State.GetSecrets(), out.State.GetResources())
	}
	out, err = r.Render(st, Facts{Name: "c"})
	if err != nil || len(out.State.GetSecrets()) != 0 {
		t.Fatalf("c: %v, secrets %v", err, out.State.GetSecrets())
	}
}
