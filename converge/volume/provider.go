package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/hivefleet/hive/converge"
	"github.com/hivefleet/hive/converge/drbd"
	"github.com/hivefleet/hive/converge/mount"
	"github.com/hivefleet/hive/internal/atomicfile"
	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Errors a Change can carry.
var (
	// ErrInvalid is wrapped for a malformed volume.
	ErrInvalid = errors.New("invalid volume")
	// ErrNotAllocated is wrapped when the volume has no minor or port (the
	// coordinators did not allocate them).
	ErrNotAllocated = errors.New("volume has no allocated DRBD minor and port")
	// ErrShrink is wrapped when the logical volume is larger than the
	// desired size: hive never shrinks a volume.
	ErrShrink = errors.New("volume is larger than its size: shrinking is refused")
	// ErrWaiting is wrapped while the first filesystem waits for every
	// peer to connect.
	ErrWaiting = errors.New("volume waits for its peers before its first format")
	// ErrDockerConflict is wrapped when a Docker volume of the same name
	// exists with other options.
	ErrDockerConflict = errors.New("docker volume exists with other options")
	// ErrSandbox is returned by Apply in sandbox mode.
	ErrSandbox = errors.New("volume provider in sandbox mode: plan only")
)

// Owner is the drbd.Spec owner of volumes' resource files.
const Owner = "volume"

// DockerLabel marks the Docker volumes hive created; its value is the
// volume name.
const DockerLabel = "hive.volume"

// Config configures the provider.
type Config struct {
	// DevDir is where logical volumes appear: DevDir/VG/NAME ("/dev").
	DevDir string
	// DrbdDevice returns the device of a DRBD minor ("/dev/drbd<minor>").
	DrbdDevice func(minor uint32) string
	// StateDir, below Env.Root, keeps one JSON file per volume made on
	// this node, recording its first format.
	StateDir string
	// DockerHost is the Docker Engine API endpoint; "" publishes no Docker
	// volumes. An engine that does not answer is skipped (no Docker there).
	DockerHost string
	// Sandbox: plan only, never observe or change the machine.
	Sandbox bool
}

// DefaultConfig returns /dev, /dev/drbdN, /var/lib/hive/volumes and the
// local Docker socket.
func DefaultConfig() Config {
	return Config{
		DevDir:     "/dev",
		DrbdDevice: func(m uint32) string { return "/dev/drbd" + strconv.FormatUint(uint64(m), 10) },
		StateDir:   "/var/lib/hive/volumes",
		DockerHost: "unix:///var/run/docker.sock",
	}
}

// Validate checks the config.
func (c Config) Validate() error {
	if c.DevDir == "" || c.DrbdDevice == nil || c.StateDir == "" {
		return errors.New("volume: DevDir, DrbdDevice and StateDir must be set")
	}
	return nil
}

// Provider converges the "volume" kind.
type Provider struct {
	cfg    Config
	drbd   *drbd.Provider
	docker *client.Client // nil: no Docker volumes
	log    *slog.Logger
}

var (
	_ converge.Provider = (*Provider)(nil)
	_ converge.Pruner   = (*Provider)(nil)
	_ converge.Linker   = (*Provider)(nil)
)

// New returns a provider that renders and applies the DRBD resources
// through dp.
func New(cfg Config, dp *drbd.Provider, log *slog.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dp == nil {
		return nil, errors.New("volume: a drbd provider is required")
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Provider{cfg: cfg, drbd: dp, log: log.With("component", "volume")}
	if cfg.DockerHost != "" && !cfg.Sandbox {
		cli, err := client.New(client.WithHost(cfg.DockerHost))
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		p.docker = cli
	}
	return p, nil
}

// Close releases the Docker client.
func (p *Provider) Close() error {
	if p.docker != nil {
		return p.docker.Close()
	}
	return nil
}

// Kind implements converge.Provider.
func (p *Provider) Kind() string { return converge.KindVolume }

// Requires implements converge.Linker: the tools come first when the
// state installs them.
func (p *Provider) Requires(r *hivev1.Resource, all []*hivev1.Resource) []string {
	return []string{"package:lvm2", "package:drbd-utils"}
}

// stateFile is StateDir/NAME.json.
type stateFile struct {
	Name      string `json:"name"`
	Minor     uint32 `json:"minor"`
	VG        string `json:"vg"`
	Formatted bool   `json:"formatted"`
	Fstype    string `json:"fstype,omitempty"`
}

type planData struct {
	v        *hivev1.Volume
	self     string
	diskless bool
	vg, pool string
	lv       string // LV device path
	dev      string // /dev/drbdN

	makeVG, makePool, createLV, extendLV bool
	lvSize                               uint64
	drbd                                 bool // plan and apply the drbd resource at apply time
	format                               bool
	growFS                               bool // the filesystem is smaller than its Primary device
	dockerCreate                         bool
	remove                               bool
	steps                                []string
}

// Plan implements converge.Provider.
func (p *Provider) Plan(ctx context.Context, env *converge.Env, b *converge.Batch) ([]*converge.Change, error) {
	out := make([]*converge.Change, len(b.Items))
	for i, it := range b.Items {
		ch := &converge.Change{Key: it.Key, Resource: it.Resource}
		out[i] = ch
		v := it.Resource.GetVolume()
		if v == nil || it.Key != converge.KindVolume+":"+v.GetName() {
			ch.Err = fmt.Errorf("%w: %s is not volume:%s", ErrInvalid, it.Key, v.GetName())
			continue
		}
		d, err := p.plan(ctx, env, v)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			ch.Err = err
			continue
		}
		ch.Data = d
		if len(d.steps) == 0 {
			ch.Summary = "up to date"
			continue
		}
		ch.Needed = true
		ch.Diff = strings.Join(d.steps, "\n") + "\n"
		ch.Summary = fmt.Sprintf("%d step(s): %s", len(d.steps), d.steps[0])
	}
	return out, nil
}

func (p *Provider) names(v *hivev1.Volume) (vg, pool, lv string) {
	vg, pool = v.GetPool().GetVg(), v.GetPool().GetThinPool()
	if vg == "" {
		vg = site.DefaultVolumeVG
	}
	if pool == "" {
		pool = site.DefaultVolumeThinPool
	}
	return vg, pool, filepath.Join(p.cfg.DevDir, vg, v.GetName())
}

func (p *Provider) plan(ctx context.Context, env *converge.Env, v *hivev1.Volume) (*planData, error) {
	if err := site.CheckVolumeName(v.GetName()); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	d := &planData{v: v, self: env.Facts.GetName()}
	d.vg, d.pool, d.lv = p.names(v)
	d.dev = p.cfg.DrbdDevice(v.GetMinor())
	if v.GetAbsent() {
		return d, p.planRemove(ctx, env, d)
	}
	if v.GetMinor() == 0 || v.GetPort() == 0 {
		return nil, fmt.Errorf("%w: volume %s (minor %d, port %d)", ErrNotAllocated, v.GetName(), v.GetMinor(), v.GetPort())
	}
	for _, n := range v.GetDisklessPeers() {
		if n == d.self {
			d.diskless = true
		}
	}
	if _, err := p.spec(d); err != nil {
		return nil, err
	}
	if p.cfg.Sandbox {
		d.steps = append(d.steps, "not observed (sandbox root): would make the pool, the LV, the drbd resource, the first filesystem and the docker volume as needed")
		return d, nil
	}
	if !d.diskless {
		if err := p.planDisk(ctx, env, d); err != nil {
			return nil, err
		}
	}
	// The drbd resource: planned through the drbd provider once its disk
	// exists; a new LV's resource is planned again right after lvcreate.
	if d.diskless || !d.createLV {
		spec, _ := p.spec(d)
		ch, err := p.drbd.PlanSpec(ctx, env, converge.KindDrbd+":"+v.GetName(), spec)
		if err != nil {
			return nil, err
		}
		if ch.Err != nil {
			return nil, ch.Err
		}
		if ch.Needed {
			d.drbd = true
			for _, l := range strings.Split(strings.TrimSpace(ch.Diff), "\n") {
				d.steps = append(d.steps, "drbd: "+l)
			}
		}
	} else {
		d.drbd = true
		d.steps = append(d.steps, fmt.Sprintf("drbd: write %s/%s.res (minor %d, port %d), create-md on the new LV, adjust", drbd.ConfDir, v.GetName(), v.GetMinor(), v.GetPort()))
	}
	if !d.diskless && !d.createLV && !d.extendLV {
		grow, why, err := p.fsNeedsGrow(ctx, env, d)
		if err != nil {
			return nil, err
		}
		if grow {
			d.growFS = true
			d.steps = append(d.steps, "grow the filesystem: "+why)
		}
	}
	if !d.diskless && v.GetInitialPrimary() == d.self {
		st, err := p.readState(env, v.GetName())
		if err != nil {
			return nil, err
		}
		if st == nil || !st.Formatted {
			d.format = true
			d.steps = append(d.steps, fmt.Sprintf("first format: drbdadm primary --force %s, mkfs.%s %s, drbdadm secondary (only if the resource was never promoted and %s is blank)", v.GetName(), v.GetFstype(), d.dev, d.dev))
		}
	}
	if err := p.planDocker(ctx, d); err != nil {
		return nil, err
	}
	return d, nil
}

// spec builds the drbd resource of the volume for this node.
func (p *Provider) spec(d *planData) (*drbd.Spec, error) {
	v := d.v
	opts := map[string]string{"options/quorum": "majority", "options/on-no-quorum": "io-error"}
	for k, val := range v.GetOptions() {
		opts[k] = val
	}
	dr := &hivev1.Drbd{Name: v.GetName(), Minor: v.GetMinor(), Disk: d.lv, Port: v.GetPort(), Protocol: v.GetProtocol(), PeerRole: v.GetReplicaRole(), Options: opts}
	for _, pe := range v.GetPeers() {
		dr.Peers = append(dr.Peers, &hivev1.DrbdPeer{Name: pe.GetName(), Address: pe.GetAddress(), NodeId: pe.GetNodeId()})
	}
	s, err := drbd.Check(dr, d.self)
	if err != nil {
		return nil, err
	}
	s.Owner = Owner
	if len(v.GetDisklessPeers()) > 0 {
		s.Diskless = map[string]bool{}
		for _, n := range v.GetDisklessPeers() {
			s.Diskless[n] = true
		}
	}
	return s, nil
}

// planDisk plans the volume group, thin pool and LV.
func (p *Provider) planDisk(ctx context.Context, env *converge.Env, d *planData) error {
	vgOK, err := p.vgExists(ctx, env, d.vg)
	if err != nil {
		return err
	}
	disk := d.v.GetPool().GetDisk()
	if !vgOK {
		if err := mount.CheckBlank(ctx, env, disk); err != nil {
			return fmt.Errorf("volume group %s is missing and its disk cannot hold it: %w", d.vg, err)
		}
		d.makeVG, d.makePool, d.createLV = true, true, true
		d.steps = append(d.steps, fmt.Sprintf("pvcreate %s, vgcreate %s %s (the disk is blank)", disk, d.vg, disk),
			fmt.Sprintf("lvcreate thin pool %s/%s", d.vg, d.pool),
			fmt.Sprintf("lvcreate thin LV %s/%s of %s", d.vg, d.v.GetName(), site.FormatSize(d.v.GetSizeBytes())))
		return nil
	}
	lvs, extent, err := p.listLVs(ctx, env, d.vg)
	if err != nil {
		return err
	}
	if _, ok := lvs[d.pool]; !ok {
		d.makePool = true
		d.steps = append(d.steps, fmt.Sprintf("lvcreate thin pool %s/%s", d.vg, d.pool))
	}
	have, ok := lvs[d.v.GetName()]
	want := d.v.GetSizeBytes()
	switch {
	case !ok:
		d.createLV = true
		d.steps = append(d.steps, fmt.Sprintf("lvcreate thin LV %s/%s of %s", d.vg, d.v.GetName(), site.FormatSize(want)))
	case extent > 0 && have > (want+extent-1)/extent*extent:
		return fmt.Errorf("%w: %s/%s is %d bytes, the site asks %d", ErrShrink, d.vg, d.v.GetName(), have, want)
	case have < want:
		d.extendLV, d.lvSize = true, have
		d.steps = append(d.steps, fmt.Sprintf("lvextend %s/%s from %s to %s, drbdadm resize, grow the filesystem where Primary", d.vg, d.v.GetName(), site.FormatSize(have), site.FormatSize(want)))
	}
	return nil
}

func (p *Provider) planDocker(ctx context.Context, d *planData) error {
	if p.docker == nil {
		return nil
	}
	res, err := p.docker.VolumeInspect(ctx, d.v.GetName(), client.VolumeInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		d.dockerCreate = true
		d.steps = append(d.steps, fmt.Sprintf("docker volume create %s (local, device=%s, type=%s)", d.v.GetName(), d.dev, d.v.GetFstype()))
		return nil
	}
	if err != nil {
		if client.IsErrConnectionFailed(err) {
			return nil // no Docker engine on this node
		}
		return fmt.Errorf("docker volume inspect %s: %w", d.v.GetName(), err)
	}
	vol := res.Volume
	if vol.Driver != "local" || vol.Options["device"] != d.dev || vol.Options["type"] != d.v.GetFstype() {
		return fmt.Errorf("%w: %s has driver %s, options %v; want local, device=%s, type=%s (remove it to let hive create it)", ErrDockerConflict, d.v.GetName(), vol.Driver, vol.Options, d.dev, d.v.GetFstype())
	}
	return nil
}

// Apply implements converge.Provider.
func (p *Provider) Apply(ctx context.Context, env *converge.Env, changes []*converge.Change) error {
	if p.cfg.Sandbox {
		return ErrSandbox
	}
	for _, ch := range changes {
		d, ok := ch.Data.(*planData)
		if !ok || ch.Err != nil || !ch.Needed {
			continue
		}
		if d.remove {
			ch.Err = p.applyRemove(ctx, env, d)
		} else {
			ch.Err = p.apply(ctx, env, d)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func (p *Provider) apply(ctx context.Context, env *converge.Env, d *planData) error {
	v := d.v
	disk := v.GetPool().GetDisk()
	if d.makeVG {
		// Checked again right before writing: never over data.
		if err := mount.CheckBlank(ctx, env, disk); err != nil {
			return fmt.Errorf("volume group %s: %w", d.vg, err)
		}
		if err := p.run(ctx, env, "pvcreate", disk); err != nil {
			return err
		}
		if err := p.run(ctx, env, "vgcreate", d.vg, disk); err != nil {
			return err
		}
		p.log.Info("volume group created", "vg", d.vg, "disk", disk)
	}
	if d.makePool {
		if err := p.run(ctx, env, "lvcreate", "--type", "thin-pool", "-l", "90%FREE", "-n", d.pool, d.vg); err != nil {
			return err
		}
	}
	if d.createLV {
		if err := p.run(ctx, env, "lvcreate", "--type", "thin", "-V", fmt.Sprintf("%db", v.GetSizeBytes()), "--thinpool", d.pool, "-n", v.GetName(), d.vg); err != nil {
			return err
		}
		p.log.Info("logical volume created", "volume", v.GetName(), "size", v.GetSizeBytes())
	}
	if d.extendLV {
		if err := p.run(ctx, env, "lvextend", "-L", fmt.Sprintf("%db", v.GetSizeBytes()), d.vg+"/"+v.GetName()); err != nil {
			return err
		}
	}
	if !d.diskless {
		if st, err := p.readState(env, v.GetName()); err != nil {
			return err
		} else if st == nil {
			if err := p.writeState(env, &stateFile{Name: v.GetName(), Minor: v.GetMinor(), VG: d.vg}); err != nil {
				return err
			}
		}
	}
	if d.drbd {
		spec, err := p.spec(d)
		if err != nil {
			return err
		}
		ch, err := p.drbd.PlanSpec(ctx, env, converge.KindDrbd+":"+v.GetName(), spec)
		if err != nil {
			return err
		}
		if ch.Err == nil && ch.Needed {
			if err := p.drbd.Apply(ctx, env, []*converge.Change{ch}); err != nil {
				return err
			}
		}
		if ch.Err != nil {
			return ch.Err
		}
	}
	if d.extendLV {
		p.resize(ctx, env, d)
	}
	if d.extendLV || d.growFS {
		if err := p.growFS(ctx, env, d); err != nil {
			return err
		}
	}
	if d.format {
		if err := p.firstFormat(ctx, env, d); err != nil {
			return err
		}
	}
	if d.dockerCreate {
		_, err := p.docker.VolumeCreate(ctx, client.VolumeCreateOptions{
			Name: v.GetName(), Driver: "local",
			DriverOpts: map[string]string{"device": d.dev, "type": v.GetFstype()},
			Labels:     map[string]string{DockerLabel: v.GetName()},
		})
		if err != nil {
			return fmt.Errorf("docker volume create %s: %w", v.GetName(), err)
		}
		p.log.Info("docker volume created", "volume", v.GetName(), "device", d.dev)
	}
	return nil
}

// resize resizes DRBD to the grown LVs; it succeeds once every replica
// has grown (until then the other replicas' runs do it).
func (p *Provider) resize(ctx context.Context, env *converge.Env, d *planData) {
	if _, err := p.drbdadm(ctx, env, d.self, "resize", d.v.GetName()); err != nil {
		p.log.Info("drbd resize waits for the other replicas to grow", "volume", d.v.GetName(), "err", err)
	}
}

// fsNeedsGrow reports whether this node holds the volume Primary (in use,
// mounted) with a filesystem at least 1 MiB smaller than the device.
func (p *Provider) fsNeedsGrow(ctx context.Context, env *converge.Env, d *planData) (bool, string, error) {
	st, err := p.status(ctx, env, d.v.GetName())
	if err != nil || st.Role != "Primary" {
		return false, "", nil // not up here, or not in use here
	}
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "blockdev", Args: []string{"--getsize64", d.dev}})
	if err != nil {
		return false, "", fmt.Errorf("size of %s: %w", d.dev, err)
	}
	dev, err := strconv.ParseUint(strings.TrimSpace(string(out.Stdout)), 10, 64)
	if err != nil {
		return false, "", fmt.Errorf("size of %s: %q", d.dev, out.Stdout)
	}
	var fsz uint64
	switch d.v.GetFstype() {
	case "xfs":
		mp, err := mountPoint(d.dev)
		if err != nil {
			return false, "", nil // Primary but not mounted: nothing to grow online
		}
		out, err := env.Runner.Run(ctx, converge.Cmd{Name: "xfs_info", Args: []string{mp}})
		if err != nil {
			return false, "", fmt.Errorf("xfs_info %s: %w", mp, err)
		}
		fsz, err = xfsSize(string(out.Stdout))
		if err != nil {
			return false, "", err
		}
	default:
		out, err := env.Runner.Run(ctx, converge.Cmd{Name: "dumpe2fs", Args: []string{"-h", d.dev}})
		if err != nil {
			return false, "", fmt.Errorf("dumpe2fs -h %s: %w", d.dev, err)
		}
		fsz, err = ext4Size(string(out.Stdout))
		if err != nil {
			return false, "", err
		}
	}
	if dev < fsz+1<<20 {
		return false, "", nil
	}
	return true, fmt.Sprintf("%s holds %d bytes of %s, the device %d", d.dev, fsz, d.v.GetFstype(), dev), nil
}

// growFS grows the filesystem where the volume is Primary.
func (p *Provider) growFS(ctx context.Context, env *converge.Env, d *planData) error {
	grow, why, err := p.fsNeedsGrow(ctx, env, d)
	if err != nil || !grow {
		return err
	}
	cmd := converge.Cmd{Name: "resize2fs", Args: []string{d.dev}}
	if d.v.GetFstype() == "xfs" {
		mp, err := mountPoint(d.dev)
		if err != nil {
			return err
		}
		cmd = converge.Cmd{Name: "xfs_growfs", Args: []string{mp}}
	}
	if out, err := env.Runner.Run(ctx, cmd); err != nil {
		return fmt.Errorf("grow the filesystem of %s: %w: %s", d.v.GetName(), err, strings.TrimSpace(string(out.Stderr)))
	}
	p.log.Info("filesystem grown", "volume", d.v.GetName(), "was", why)
	return nil
}

// ext4Size reads the filesystem size from `dumpe2fs -h`.
func ext4Size(out string) (uint64, error) {
	var count, bsize uint64
	for _, l := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "Block count":
			if err == nil {
				count = n
			}
		case "Block size":
			if err == nil {
				bsize = n
			}
		}
	}
	if count == 0 || bsize == 0 {
		return 0, errors.New("dumpe2fs: no block count and size")
	}
	return count * bsize, nil
}

// xfsSize reads the data section size from xfs_info: "data = bsize=4096
// blocks=262144, ...".
func xfsSize(out string) (uint64, error) {
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "data") {
			continue
		}
		var bsize, blocks uint64
		for _, f := range strings.FieldsFunc(l, func(r rune) bool { return r == ' ' || r == ',' }) {
			if v, ok := strings.CutPrefix(f, "bsize="); ok {
				bsize, _ = strconv.ParseUint(v, 10, 64)
			}
			if v, ok := strings.CutPrefix(f, "blocks="); ok {
				blocks, _ = strconv.ParseUint(v, 10, 64)
			}
		}
		if bsize > 0 && blocks > 0 {
			return bsize * blocks, nil
		}
	}
	return 0, errors.New("xfs_info: no data section size")
}

func mountPoint(dev string) (string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == dev {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s is not mounted", dev)
}

// drbdStatus is the part of `drbdsetup status NAME --json` the first
// format reads.
type drbdStatus struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Devices []struct {
		DiskState string `json:"disk-state"`
	} `json:"devices"`
	Connections []struct {
		Name            string `json:"name"`
		ConnectionState string `json:"connection-state"`
		PeerRole        string `json:"peer-role"`
		PeerDevices     []struct {
			PeerDiskState string `json:"peer-disk-state"`
		} `json:"peer_devices"`
	} `json:"connections"`
}

func (p *Provider) status(ctx context.Context, env *converge.Env, name string) (*drbdStatus, error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "drbdsetup", Args: []string{"status", name, "--json"}})
	if err != nil {
		return nil, fmt.Errorf("drbdsetup status %s: %w", name, err)
	}
	var st []drbdStatus
	if err := json.Unmarshal(out.Stdout, &st); err != nil {
		return nil, fmt.Errorf("drbdsetup status %s: %v", name, err)
	}
	for i := range st {
		if st[i].Name == name {
			return &st[i], nil
		}
	}
	return nil, fmt.Errorf("drbd resource %s is not up", name)
}

// neverPromoted returns nil when no replica of the resource ever held
// data: the local disk Inconsistent, every peer connected, none Primary,
// no peer disk with data. Otherwise an error saying why not, wrapping
// ErrWaiting when a peer is not connected yet.
func neverPromoted(st *drbdStatus) error {
	if len(st.Devices) == 0 || st.Devices[0].DiskState != "Inconsistent" {
		ds := "none"
		if len(st.Devices) > 0 {
			ds = st.Devices[0].DiskState
		}
		return fmt.Errorf("local disk is %s, not Inconsistent: the volume holds data", ds)
	}
	if st.Role == "Primary" {
		return errors.New("this node is Primary")
	}
	for _, c := range st.Connections {
		if c.ConnectionState != "Connected" {
			return fmt.Errorf("%w: peer %s is %s", ErrWaiting, c.Name, c.ConnectionState)
		}
		if c.PeerRole == "Primary" {
			return fmt.Errorf("peer %s is Primary: the volume holds data", c.Name)
		}
		for _, pd := range c.PeerDevices {
			switch pd.PeerDiskState {
			case "Inconsistent", "Diskless":
			default:
				return fmt.Errorf("peer %s disk is %s: the volume may hold data", c.Name, pd.PeerDiskState)
			}
		}
	}
	return nil
}

// firstFormat makes the first primary and the filesystem, once (see the
// package doc for the guards).
func (p *Provider) firstFormat(ctx context.Context, env *converge.Env, d *planData) error {
	name := d.v.GetName()
	sf, err := p.readState(env, name)
	if err != nil {
		return err
	}
	if sf != nil && sf.Formatted {
		return nil
	}
	st, err := p.status(ctx, env, name)
	if err != nil {
		return fmt.Errorf("first format of %s: %w", name, err)
	}
	if err := neverPromoted(st); err != nil {
		if errors.Is(err, ErrWaiting) {
			return err
		}
		// Data exists somewhere: never format; record it so no later run
		// tries again.
		p.log.Info("volume holds data: not formatting", "volume", name, "why", err)
		return p.markFormatted(env, d, "")
	}
	if err := mount.CheckBlank(ctx, env, d.dev); err != nil {
		return fmt.Errorf("first format of %s: %w", name, err)
	}
	if _, err := p.drbdadm(ctx, env, d.self, "primary", "--force", name); err != nil {
		return fmt.Errorf("first primary of %s: %w", name, err)
	}
	if _, err := env.Runner.Run(ctx, converge.Cmd{Name: "mkfs." + d.v.GetFstype(), Args: []string{"-q", d.dev}}); err != nil {
		return fmt.Errorf("mkfs.%s %s: %w", d.v.GetFstype(), d.dev, err)
	}
	if err := p.markFormatted(env, d, d.v.GetFstype()); err != nil {
		return err
	}
	p.log.Info("volume formatted", "volume", name, "device", d.dev, "fstype", d.v.GetFstype())
	if _, err := p.drbdadm(ctx, env, d.self, "secondary", name); err != nil {
		return fmt.Errorf("secondary %s after the first format: %w", name, err)
	}
	return nil
}

func (p *Provider) markFormatted(env *converge.Env, d *planData, fstype string) error {
	return p.writeState(env, &stateFile{Name: d.v.GetName(), Minor: d.v.GetMinor(), VG: d.vg, Formatted: true, Fstype: fstype})
}

// planRemove plans taking an absent volume down.
func (p *Provider) planRemove(ctx context.Context, env *converge.Env, d *planData) error {
	if d.v.GetConfirm() != d.v.GetName() {
		return fmt.Errorf("%w: state absent without confirm_destroy: %s", ErrInvalid, d.v.GetName())
	}
	d.remove = true
	if p.cfg.Sandbox {
		d.steps = append(d.steps, "not observed (sandbox root): would remove the volume if present")
		return nil
	}
	name := d.v.GetName()
	// The volume group it was made in, when the site no longer says.
	if st, err := p.readState(env, name); err != nil {
		return err
	} else if st != nil && st.VG != "" && d.v.GetPool() == nil {
		d.vg = st.VG
		d.lv = filepath.Join(p.cfg.DevDir, st.VG, name)
	}
	if p.docker != nil {
		if _, err := p.docker.VolumeInspect(ctx, name, client.VolumeInspectOptions{}); err == nil {
			d.steps = append(d.steps, "docker volume rm "+name)
		}
	}
	owned, err := p.drbd.Owned(env, Owner)
	if err != nil {
		return err
	}
	for _, n := range owned {
		if n == name {
			d.steps = append(d.steps, fmt.Sprintf("drbdadm down %s, remove %s/%s.res", name, drbd.ConfDir, name))
		}
	}
	if ok, err := p.vgExists(ctx, env, d.vg); err != nil {
		return err
	} else if ok {
		lvs, _, err := p.listLVs(ctx, env, d.vg)
		if err != nil {
			return err
		}
		if _, ok := lvs[name]; ok {
			d.steps = append(d.steps, fmt.Sprintf("lvremove %s/%s (destroys its data)", d.vg, name))
		}
	}
	if st, err := p.readState(env, name); err != nil {
		return err
	} else if st != nil {
		d.steps = append(d.steps, "forget "+p.cfg.StateDir+"/"+name+".json")
	}
	return nil
}

func (p *Provider) applyRemove(ctx context.Context, env *converge.Env, d *planData) error {
	name := d.v.GetName()
	if p.docker != nil {
		if _, err := p.docker.VolumeRemove(ctx, name, client.VolumeRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) && !client.IsErrConnectionFailed(err) {
			return fmt.Errorf("docker volume rm %s: %w", name, err)
		}
	}
	if err := p.drbd.Remove(ctx, env, name); err != nil {
		return err
	}
	if ok, err := p.vgExists(ctx, env, d.vg); err != nil {
		return err
	} else if ok {
		lvs, _, err := p.listLVs(ctx, env, d.vg)
		if err != nil {
			return err
		}
		if _, ok := lvs[name]; ok {
			if err := p.run(ctx, env, "lvremove", "-y", d.vg+"/"+name); err != nil {
				return err
			}
		}
	}
	path, err := p.statePath(env, name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	p.log.Info("volume removed", "volume", name)
	return nil
}

// Prune implements converge.Pruner: a volume made on this node but no
// longer in its state is kept and reported (Needed false), never deleted.
func (p *Provider) Prune(ctx context.Context, env *converge.Env, present []converge.Item) ([]*converge.Change, error) {
	if p.cfg.Sandbox {
		return nil, nil
	}
	kept := map[string]bool{}
	for _, it := range present {
		kept[it.Resource.GetVolume().GetName()] = true
	}
	names := map[string]bool{}
	dir, err := env.Path(p.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", p.cfg.StateDir, err)
	}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok && !kept[n] {
			names[n] = true
		}
	}
	owned, err := p.drbd.Owned(env, Owner)
	if err != nil {
		return nil, err
	}
	for _, n := range owned {
		if !kept[n] {
			names[n] = true
		}
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var out []*converge.Change
	for _, n := range sorted {
		out = append(out, &converge.Change{
			Key:     converge.KindVolume + ":" + n,
			Summary: fmt.Sprintf("kept: volume %s is no longer in this node's state; its data stays until the site declares it with state: absent and confirm_destroy: %s", n, n),
		})
	}
	return out, nil
}

// run runs an lvm2 command; the error carries its stderr.
func (p *Provider) run(ctx context.Context, env *converge.Env, name string, args ...string) error {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: name, Args: args})
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out.Stderr)))
	}
	return nil
}

// drbdadm runs drbdadm on the volume's resource file (args end with the
// resource name), as node self.
func (p *Provider) drbdadm(ctx context.Context, env *converge.Env, self string, args ...string) ([]byte, error) {
	conf, err := env.Path(drbd.ConfDir + "/" + args[len(args)-1] + ".res")
	if err != nil {
		return nil, err
	}
	args = append([]string{"-c", conf}, args...)
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "drbdadm", Args: args, Env: []string{"__DRBD_NODE__=" + self}})
	if err != nil {
		return out.Stdout, fmt.Errorf("drbdadm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out.Stderr)))
	}
	return out.Stdout, nil
}

// vgExists reports whether volume group vg exists.
func (p *Provider) vgExists(ctx context.Context, env *converge.Env, vg string) (bool, error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "vgs", Args: []string{"--noheadings", "-o", "vg_name", vg}})
	var ee *converge.ExitError
	if errors.As(err, &ee) && ee.Code == 5 {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("vgs %s: %w: %s", vg, err, strings.TrimSpace(string(out.Stderr)))
	}
	return strings.TrimSpace(string(out.Stdout)) == vg, nil
}

// listLVs returns the sizes of vg's logical volumes by name, and its
// extent size, in bytes.
func (p *Provider) listLVs(ctx context.Context, env *converge.Env, vg string) (map[string]uint64, uint64, error) {
	out, err := env.Runner.Run(ctx, converge.Cmd{Name: "lvs", Args: []string{"--noheadings", "--units", "b", "--nosuffix", "--separator", ",", "-o", "lv_name,lv_size,vg_extent_size", vg}})
	if err != nil {
		return nil, 0, fmt.Errorf("lvs %s: %w: %s", vg, err, strings.TrimSpace(string(out.Stderr)))
	}
	lvs := map[string]uint64{}
	var extent uint64
	for _, l := range strings.Split(string(out.Stdout), "\n") {
		f := strings.Split(strings.TrimSpace(l), ",")
		if len(f) != 3 {
			continue
		}
		size, err1 := strconv.ParseUint(f[1], 10, 64)
		ext, err2 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, 0, fmt.Errorf("lvs %s: unexpected line %q", vg, l)
		}
		lvs[f[0]] = size
		extent = ext
	}
	return lvs, extent, nil
}

func (p *Provider) statePath(env *converge.Env, name string) (string, error) {
	return env.Path(p.cfg.StateDir + "/" + name + ".json")
}

func (p *Provider) readState(env *converge.Env, name string) (*stateFile, error) {
	path, err := p.statePath(env, name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &st, nil
}

func (p *Provider) writeState(env *converge.Env, st *stateFile) error {
	path, err := p.statePath(env, st.Name)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), atomicfile.Options{Perm: 0o600, MkdirPerm: 0o700})
}
