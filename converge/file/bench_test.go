package file_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/file"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// BenchmarkNoopTemplates is BenchmarkNoopFiles with templated content
// (a range, printf, join, upper per file): the cost of the template
// limits shows here.
func BenchmarkNoopTemplates(b *testing.B) {
	env := newEnv(b)
	reg, _ := converge.NewRegistry(file.New())
	eng, err := converge.New(converge.Config{Root: env.Root, Runner: converge.ExecRunner{}, Family: converge.FamilyDebian,
		Logger: slog.New(slog.DiscardHandler)}, reg)
	must(b, err)
	st := &hivev1.NodeState{Facts: env.Facts, Secrets: env.Secrets}
	tmpl := "# {{ .Name }}\n{{ range 40 }}{{ printf \"line %d of config\" . }} {{ upper (join $.Roles \",\") }}\n{{ end }}"
	for i := range 100 {
		st.Resources = append(st.Resources, res(&hivev1.File{Path: fmt.Sprintf("/etc/bench/t%03d.conf", i),
			Content: tmpl, Template: true, Mode: 0o644}))
	}
	ctx := context.Background()
	if _, err := eng.Run(ctx, st, converge.RunOptions{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		rep, err := eng.Run(ctx, st, converge.RunOptions{})
		if err != nil || rep.Count(hivev1.Outcome_OUTCOME_OK) != 100 {
			b.Fatalf("not a no-op: %v", err)
		}
	}
}
