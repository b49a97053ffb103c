package drbd

import (
	"strings"
	"testing"
)

func TestHealthOf(t *testing.T) {
	const ok = `[{"name":"r0","node-id":0,"role":"Secondary","devices":[{"volume":0,"minor":1,"disk-state":"UpToDate"}],
"connections":[{"peer-node-id":1,"name":"db-b","connection-state":"Connected","peer_devices":[{"volume":0,"replication-state":"Established","peer-disk-state":"UpToDate"}]}]}]`
	if err := healthOf("r0", []byte(ok)); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	for _, c := range []struct{ in, want string }{
		{strings.Replace(ok, `"disk-state":"UpToDate"`, `"disk-state":"Inconsistent"`, 1), "volume 0 disk Inconsistent"},
		{strings.Replace(ok, `"Connected"`, `"Connecting"`, 1), "peer db-b Connecting"},
		{strings.Replace(ok, `"peer-disk-state":"UpToDate"`, `"peer-disk-state":"Outdated"`, 1), "peer db-b volume 0 disk Outdated"},
		{`[]`, "resource r0 is not up"},
		{`[{"name":"r0","devices":[{"volume":0,"disk-state":"UpToDate"}],"connections":[]}]`, "no peer connection"},
		{`nonsense`, "drbdsetup status r0"},
	} {
		if err := healthOf("r0", []byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.60s…: err = %v, want %q", c.in, err, c.want)
		}
	}
}
