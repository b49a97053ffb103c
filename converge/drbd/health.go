package drbd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hivefleet/hive/converge"
)

// statusJSON is the part of `drbdsetup status NAME --json` Health reads.
type statusJSON struct {
	Name    string `json:"name"`
	Devices []struct {
		Volume    int    `json:"volume"`
		DiskState string `json:"disk-state"`
	} `json:"devices"`
	Connections []struct {
		Name            string `json:"name"`
		ConnectionState string `json:"connection-state"`
		PeerDevices     []struct {
			Volume        int    `json:"volume"`
			PeerDiskState string `json:"peer-disk-state"`
		} `json:"peer_devices"`
	} `json:"connections"`
}

// Health is the built-in health check of DRBD resource name: every local
// volume UpToDate, every peer connection Connected with its volumes
// UpToDate. A sandboxed provider passes.
func (p *Provider) Health(ctx context.Context, runner converge.Runner, name string) error {
	if p.cfg.Sandbox {
		return nil
	}
	out, err := runner.Run(ctx, converge.Cmd{Name: "drbdsetup", Args: []string{"status", name, "--json"}})
	if err != nil {
		return fmt.Errorf("drbdsetup status %s: %w", name, err)
	}
	return healthOf(name, out.Stdout)
}

// healthOf judges drbdsetup's JSON status of one resource.
func healthOf(name string, data []byte) error {
	var st []statusJSON
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("drbdsetup status %s: %v", name, err)
	}
	for _, r := range st {
		if r.Name != name {
			continue
		}
		var bad []string
		for _, d := range r.Devices {
			if d.DiskState != "UpToDate" {
				bad = append(bad, fmt.Sprintf("volume %d disk %s", d.Volume, d.DiskState))
			}
		}
		if len(r.Connections) == 0 {
			bad = append(bad, "no peer connection")
		}
		for _, c := range r.Connections {
			if c.ConnectionState != "Connected" {
				bad = append(bad, fmt.Sprintf("peer %s %s", c.Name, c.ConnectionState))
				continue
			}
			for _, pd := range c.PeerDevices {
				if pd.PeerDiskState != "UpToDate" {
					bad = append(bad, fmt.Sprintf("peer %s volume %d disk %s", c.Name, pd.Volume, pd.PeerDiskState))
				}
			}
		}
		if len(bad) > 0 {
			return fmt.Errorf("%s: %s", name, strings.Join(bad, ", "))
		}
		return nil
	}
	return fmt.Errorf("resource %s is not up", name)
}
