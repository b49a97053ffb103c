package site

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Rollout policy bounds.
const (
	// MaxRolloutDuration bounds min_healthy_time and healthy_deadline.
	MaxRolloutDuration = 24 * time.Hour
	// MaxCanaryNodes bounds a canary list.
	MaxCanaryNodes = 100
)

// rollout decodes a `rollout:` section (top level or a role's):
//
//	rollout:
//	  canary: 1                 # a count, or a list of node names
//	  max_parallel: 25%         # a count, or a percent of the nodes
//	  min_healthy_time: 30s
//	  healthy_deadline: 5m
//	  on_failure: rollback      # or pause (the default)
func (d *decoder) rollout(n *yaml.Node, path string) *hivev1.RolloutPolicy {
	p := &hivev1.RolloutPolicy{}
	if isNull(n) {
		return p
	}
	d.mapping(n, path,
		field{"canary", func(v *yaml.Node, fp string) {
			v = resolve(v)
			if v.Kind == yaml.SequenceNode {
				p.CanaryNodes = d.strList(v, fp)
				for _, name := range p.CanaryNodes {
					if !validName(name) || strings.Contains(name, "/") {
						d.errorf(v, fp, "canary node name %q: use letters, digits, '.', '_' and '-' only", name)
					}
				}
				if len(p.CanaryNodes) > MaxCanaryNodes {
					d.errorf(v, fp, "%d canary nodes; at most %d", len(p.CanaryNodes), MaxCanaryNodes)
				}
				return
			}
			p.CanaryCount = d.uint32In(v, fp, 0, 100000)
		}},
		field{"max_parallel", func(v *yaml.Node, fp string) {
			s := d.str(v, fp)
			if s == "" {
				return
			}
			count, pct, err := ParseMaxParallel(s)
			if err != nil {
				d.errorf(v, fp, "%v", err)
				return
			}
			p.MaxParallel, p.MaxParallelPercent = count, pct
		}},
		field{"min_healthy_time", func(v *yaml.Node, fp string) { p.MinHealthyTime = d.rolloutDuration(v, fp) }},
		field{"healthy_deadline", func(v *yaml.Node, fp string) { p.HealthyDeadline = d.rolloutDuration(v, fp) }},
		field{"on_failure", func(v *yaml.Node, fp string) {
			switch d.oneOf(v, fp, "pause", "rollback") {
			case "pause":
				p.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_PAUSE
			case "rollback":
				p.OnFailure = hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK
			}
		}},
	)
	return p
}

func (d *decoder) rolloutDuration(v *yaml.Node, path string) *durationpb.Duration {
	s := d.str(v, path)
	if s == "" {
		return nil
	}
	dur, err := ParseRolloutDuration(s)
	if err != nil {
		d.errorf(v, path, "%v", err)
		return nil
	}
	return durationpb.New(dur)
}

// ParseMaxParallel parses a max_parallel value: a count ("3", at least 1)
// or a percent ("25%", 1 to 100).
func ParseMaxParallel(s string) (count, percent uint32, err error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil || v < 1 || v > 100 {
			return 0, 0, fmt.Errorf("max_parallel %q: a percent must be a whole number from 1%% to 100%%", s)
		}
		return 0, uint32(v), nil
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v < 1 || v > 100000 {
		return 0, 0, fmt.Errorf("max_parallel %q: expected a count from 1 to 100000 or a percent such as \"25%%\"", s)
	}
	return uint32(v), 0, nil
}

// ParseRolloutDuration parses min_healthy_time and healthy_deadline: a Go
// duration from 0s to 24h.
func ParseRolloutDuration(s string) (time.Duration, error) {
	dur, err := time.ParseDuration(s)
	if err != nil || dur < 0 || dur > MaxRolloutDuration {
		return 0, fmt.Errorf("duration %q: expected a duration from 0s to 24h, e.g. \"30s\" or \"5m\"", s)
	}
	return dur, nil
}

// CheckRolloutPolicy checks a policy received over the API with the rules
// Parse applies.
func CheckRolloutPolicy(p *hivev1.RolloutPolicy) error {
	if p == nil {
		return nil
	}
	if p.GetMaxParallel() > 0 && p.GetMaxParallelPercent() > 0 {
		return fmt.Errorf("max_parallel: give a count or a percent, not both")
	}
	if p.GetMaxParallelPercent() > 100 {
		return fmt.Errorf("max_parallel: %d%% is more than 100%%", p.GetMaxParallelPercent())
	}
	if p.GetCanaryCount() > 0 && len(p.GetCanaryNodes()) > 0 {
		return fmt.Errorf("canary: give a count or node names, not both")
	}
	if len(p.GetCanaryNodes()) > MaxCanaryNodes {
		return fmt.Errorf("canary: %d nodes; at most %d", len(p.GetCanaryNodes()), MaxCanaryNodes)
	}
	for _, n := range p.GetCanaryNodes() {
		if !validName(n) || strings.Contains(n, "/") {
			return fmt.Errorf("canary node name %q: use letters, digits, '.', '_' and '-' only", n)
		}
	}
	for name, d := range map[string]*durationpb.Duration{"min_healthy_time": p.GetMinHealthyTime(), "healthy_deadline": p.GetHealthyDeadline()} {
		if d == nil {
			continue
		}
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > MaxRolloutDuration {
			return fmt.Errorf("%s: expected a duration from 0s to 24h", name)
		}
	}
	switch p.GetOnFailure() {
	case hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_UNSPECIFIED, hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_PAUSE, hivev1.RolloutOnFailure_ROLLOUT_ON_FAILURE_ROLLBACK:
	default:
		return fmt.Errorf("on_failure: unknown value %d", p.GetOnFailure())
	}
	return nil
}

// checkRollouts checks the rollout policies of a site received over the
// API (Parse checks them while decoding).
func (c *checker) checkRollouts(s *hivev1.Site) {
	if !c.api {
		return
	}
	if err := CheckRolloutPolicy(s.GetRollout()); err != nil {
		c.d.errorAt("rollout", "%v", err)
	}
	for _, r := range s.GetRoles() {
		if err := CheckRolloutPolicy(r.GetRollout()); err != nil {
			c.d.errorAt("roles."+r.GetName()+".rollout", "%v", err)
		}
	}
}
