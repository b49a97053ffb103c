package ctl

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestParseLabelChanges(t *testing.T) {
	set, remove, err := parseLabelChanges([]string{"tier=db", "rack-", "zone=eu-2"})
	if err != nil || set["tier"] != "db" || set["zone"] != "eu-2" || len(set) != 2 || !slices.Equal(remove, []string{"rack"}) {
		t.Fatalf("parseLabelChanges = %v %v %v", set, remove, err)
	}
	// "k=v-" sets a value ending in '-'.
	if set, remove, err := parseLabelChanges([]string{"tier=a-"}); err != nil || set["tier"] != "a-" || len(remove) != 0 {
		t.Fatalf("value ending in '-': %v %v %v", set, remove, err)
	}
	for _, bad := range [][]string{{"tier"}, {"tier=a", "tier-"}, {"rack-", "rack-"}, {"tier=a\nb"}, {"-"}} {
		if _, _, err := parseLabelChanges(bad); err == nil {
			t.Errorf("parseLabelChanges(%q) accepted", bad)
		}
	}
}

func TestWriteNodeShow(t *testing.T) {
	var b bytes.Buffer
	n := &hivev1.NodeStatus{
		Name: "web-7", Labels: map[string]string{"tier": "web", "zone": "b"},
		LabelSources:   map[string]string{"tier": "certificate", "zone": "operator"},
		ReportedLabels: map[string]string{"tier": "db"}, Roles: []string{"web"}, Addresses: []string{"10.0.0.7"},
		CertificateSerial: "0a1b", CertificateNotAfter: timestamppb.New(timestamppb.Now().AsTime().Truncate(1e9)),
	}
	if err := writeNodeShow(&b, n); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tier=web (certificate), zone=b (operator)", "reported:     tier=db", "serial 0a1b, expires"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("node show lacks %q:\n%s", want, b.String())
		}
	}
}
