package site

import (
	"strings"
	"testing"
)

func TestParseVolumeSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		err  string
	}{
		{"10G", 10 << 30, ""},
		{"10GiB", 10 << 30, ""},
		{"512M", 512 << 20, ""},
		{"16777216", 16 << 20, ""},
		{"1P", 1 << 50, ""},
		{"2P", 0, "larger than the limit"},
		{"8M", 0, "smaller than the minimum"},
		{"16777217", 0, "not a whole number of MiB"},
		{"1.5G", 0, "want a number"},
		{"-1G", 0, "want a number"},
		{"99999999999999999P", 0, "want a number"},
	} {
		got, err := ParseVolumeSize(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s = %d, %v; want %d", tt.in, got, err, tt.want)
		}
		if back, _ := ParseVolumeSize(FormatSize(got)); back != got {
			t.Errorf("FormatSize(%d) = %s does not read back", got, FormatSize(got))
		}
	}
}

func TestVolumeReplicaRole(t *testing.T) {
	s, err := Parse("v.yaml", []byte(`roles:
  db:
    volumes:
      - {name: pg, size: 1G, pool: {disk: /dev/vdb}, diskless: web}
      - {name: other, size: 1G, pool: {disk: /dev/vdb}, replicas: store}
  web: {}
  store: {}
`))
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := VolumeReplicaRole(s, "pg"); !ok || r != "db" {
		t.Errorf("pg: %q %v, want the declaring role", r, ok)
	}
	if r, ok := VolumeDisklessRole(s, "pg"); !ok || r != "web" {
		t.Errorf("pg diskless: %q %v", r, ok)
	}
	if r, ok := VolumeReplicaRole(s, "other"); !ok || r != "store" {
		t.Errorf("other: %q %v", r, ok)
	}
	if _, ok := VolumeReplicaRole(s, "nope"); ok {
		t.Error("unknown volume found")
	}
}
