package swarm

import (
	"context"
	"errors"
	"fmt"

	dswarm "github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
)

// Health is the built-in swarm health check of a node holding a swarm
// role: the engine is an active member of a swarm; a manager's own node
// is Ready and reachable as a manager; a worker knows a manager and one
// of them accepts a connection. A sandboxed provider has no health to
// tell and passes.
func (p *Provider) Health(ctx context.Context) error {
	if p.cfg.Sandbox {
		return nil
	}
	info, err := p.cli.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	sw := info.Info.Swarm
	if sw.LocalNodeState != dswarm.LocalNodeStateActive {
		msg := fmt.Sprintf("local swarm state is %s", sw.LocalNodeState)
		if sw.Error != "" {
			msg += ": " + sw.Error
		}
		return errors.New(msg)
	}
	if sw.ControlAvailable {
		res, err := p.cli.NodeInspect(ctx, sw.NodeID, client.NodeInspectOptions{})
		if err != nil {
			return fmt.Errorf("inspect own node: %w", err)
		}
		n := res.Node
		if n.Status.State != dswarm.NodeStateReady {
			return fmt.Errorf("node is %s, not ready: %s", n.Status.State, n.Status.Message)
		}
		if m := n.ManagerStatus; m == nil || m.Reachability != dswarm.ReachabilityReachable {
			return errors.New("manager is not reachable by the other managers")
		}
		return nil
	}
	var managers []string
	for _, m := range sw.RemoteManagers {
		managers = append(managers, m.Addr)
	}
	if len(managers) == 0 {
		return errors.New("no manager known")
	}
	return p.reachable(ctx, managers)
}
