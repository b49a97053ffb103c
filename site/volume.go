package site

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
)

// Volume limits and defaults (docs/workloads.md).
const (
	// MinVolumeSize is the smallest volume: DRBD's internal metadata and a
	// filesystem need room.
	MinVolumeSize = 16 << 20
	// MaxVolumeSize bounds a volume (1 PiB).
	MaxVolumeSize = 1 << 50
	// DefaultVolumeVG and DefaultVolumeThinPool name the pool a volume
	// lives in when pool leaves them out.
	DefaultVolumeVG       = "hive"
	DefaultVolumeThinPool = "volumes"
	// DefaultVolumeFstype is the filesystem made on a new volume.
	DefaultVolumeFstype = "ext4"
)

var (
	volumeNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{1,47}$`)
	lvmNameRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`)
	sizeRE       = regexp.MustCompile(`^([0-9]{1,16})\s*([KMGTP]?)(i?B)?$`)
)

// CheckVolumeName checks a volume name: it names the DRBD resource, the
// logical volume and the Docker volume, so it must suit all three.
func CheckVolumeName(name string) error {
	if !volumeNameRE.MatchString(name) {
		return fmt.Errorf("volume name %q: want 2 to 48 of a-z, 0-9, '_' and '-', starting with a letter or digit", name)
	}
	return nil
}

// CheckLVMName checks a volume group or thin pool name.
func CheckLVMName(field, name string) error {
	if !lvmNameRE.MatchString(name) || strings.HasPrefix(name, "_") || name == "." || name == ".." {
		return fmt.Errorf("%s %q: want letters, digits, '_', '.', '+' and '-' (at most 64), starting with a letter or digit", field, name)
	}
	return nil
}

// ParseVolumeSize reads a volume size: a whole number of bytes with an optional
// binary unit K, M, G, T or P (also written KiB, MiB, ...; "G" and "GiB"
// are both 2^30). The size must be a whole number of MiB, from
// MinVolumeSize to MaxVolumeSize.
func ParseVolumeSize(s string) (uint64, error) {
	m := sizeRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number with an optional unit K, M, G, T or P (binary), e.g. 10G", s)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %v", s, err)
	}
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}[m[2]]
	if n > MaxVolumeSize>>shift {
		return 0, fmt.Errorf("size %q is larger than the limit of 1P", s)
	}
	n <<= shift
	if n < MinVolumeSize {
		return 0, fmt.Errorf("size %q is smaller than the minimum of 16M", s)
	}
	if n%(1<<20) != 0 {
		return 0, fmt.Errorf("size %q is not a whole number of MiB", s)
	}
	return n, nil
}

// FormatSize spells a size in the largest binary unit that divides it.
func FormatSize(n uint64) string {
	for _, u := range []struct {
		s     string
		shift uint
	}{{"P", 50}, {"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.s)
		}
	}
	return strconv.FormatUint(n, 10)
}

// VolumeReplicaRole returns the role whose nodes hold a replica of the
// volume named name in s, and whether s declares that volume (absent
// volumes included). A service that mounts the volume must be placed on
// those nodes (or the volume's diskless ones, VolumeDisklessRole).
func VolumeReplicaRole(s *hivev1.Site, name string) (role string, ok bool) {
	v := FindVolume(s, name)
	if v == nil {
		return "", false
	}
	return v.GetReplicaRole(), true
}

// VolumeDisklessRole returns the role whose nodes attach the volume named
// name without a disk ("" when it has none), and whether s declares it.
func VolumeDisklessRole(s *hivev1.Site, name string) (role string, ok bool) {
	v := FindVolume(s, name)
	if v == nil {
		return "", false
	}
	return v.GetDisklessRole(), true
}

// FindVolume returns the volume named name in s, or nil.
func FindVolume(s *hivev1.Site, name string) *hivev1.Volume {
	for _, r := range s.GetRoles() {
		for _, res := range r.GetResources() {
			if v := res.GetVolume(); v != nil && v.GetName() == name {
				return v
			}
		}
	}
	return nil
}

func (d *decoder) volume(n *yaml.Node, path string) *hivev1.Resource {
	var c common
	v := &hivev1.Volume{Fstype: DefaultVolumeFstype, Protocol: "C"}
	var size, state string
	if !d.mapping(n, path, append(d.commonFields(&c),
		field{"name", func(x *yaml.Node, p string) {
			v.Name = d.str(x, p)
			if v.Name != "" {
				d.check(x, p, CheckVolumeName(v.Name))
			}
		}},
		field{"size", func(x *yaml.Node, p string) {
			size = d.str(x, p)
			if size != "" {
				var err error
				v.SizeBytes, err = ParseVolumeSize(size)
				d.check(x, p, err)
			}
		}},
		field{"fstype", func(x *yaml.Node, p string) { v.Fstype = d.oneOf(x, p, "ext4", "xfs") }},
		field{"replicas", func(x *yaml.Node, p string) { v.ReplicaRole = d.str(x, p) }},
		field{"diskless", func(x *yaml.Node, p string) { v.DisklessRole = d.str(x, p) }},
		field{"protocol", func(x *yaml.Node, p string) { v.Protocol = d.oneOf(x, p, "A", "B", "C") }},
		field{"pool", func(x *yaml.Node, p string) {
			v.Pool = &hivev1.VolumePool{Vg: DefaultVolumeVG, ThinPool: DefaultVolumeThinPool}
			d.mapping(x, p,
				field{"disk", func(y *yaml.Node, q string) {
					v.Pool.Disk = d.str(y, q)
					if v.Pool.Disk != "" {
						d.check(y, q, CheckDrbdDevice("disk", v.Pool.Disk))
					}
				}},
				field{"vg", func(y *yaml.Node, q string) {
					v.Pool.Vg = d.str(y, q)
					d.check(y, q, CheckLVMName("vg", v.Pool.Vg))
				}},
				field{"thin_pool", func(y *yaml.Node, q string) {
					v.Pool.ThinPool = d.str(y, q)
					d.check(y, q, CheckLVMName("thin_pool", v.Pool.ThinPool))
				}},
			)
		}},
		field{"options", func(x *yaml.Node, p string) {
			v.Options = d.strMap(x, p)
			x = resolve(x)
			if x.Kind != yaml.MappingNode {
				return
			}
			for i := 0; i+1 < len(x.Content); i += 2 {
				k, val := resolve(x.Content[i]), resolve(x.Content[i+1])
				if err := CheckDrbdOptionKey(k.Value); err != nil {
					d.errorf(k, p+"."+k.Value, "%v", err)
				} else if val.Kind == yaml.ScalarNode {
					d.check(val, p+"."+k.Value, CheckDrbdOptionValue(k.Value, val.Value))
				}
			}
		}},
		field{"state", func(x *yaml.Node, p string) { state = d.oneOf(x, p, "present", "absent") }},
		field{"confirm_destroy", func(x *yaml.Node, p string) { v.Confirm = d.str(x, p) }},
	)...) {
		return nil
	}
	d.required(n, path, "name", v.Name)
	v.Absent = state == "absent"
	if !v.Absent {
		d.required(n, path, "size", size)
		if v.Pool == nil {
			d.errorf(n, path+".pool", "required: the disk the volume's thin pool lives on (pool: {disk: /dev/...})")
		} else if v.Pool.Disk == "" {
			d.errorf(n, path+".pool.disk", "required")
		}
		if v.Confirm != "" {
			d.errorf(n, path+".confirm_destroy", "confirm_destroy is only for state: absent")
		}
	} else if v.Confirm != v.Name && v.Name != "" {
		d.errorf(n, path+".confirm_destroy", "state: absent destroys volume %q and its data on every node: confirm it with confirm_destroy: %s", v.Name, v.Name)
	}
	res := d.resource(n, path, &c)
	res.Kind = &hivev1.Resource_Volume{Volume: v}
	return res
}

// volumeFormat checks the fields of a volume received over the API.
func (c *checker) volumeFormat(res *hivev1.Resource) {
	v := res.GetKind().(*hivev1.Resource_Volume).Volume
	c.atErr(res, "name", CheckVolumeName(v.GetName()))
	if v.GetReplicaRole() == "" {
		c.at(res, "replicas", "required")
	}
	switch v.GetFstype() {
	case "ext4", "xfs":
	default:
		c.at(res, "fstype", "%q is not one of ext4, xfs", v.GetFstype())
	}
	switch v.GetProtocol() {
	case "A", "B", "C":
	default:
		c.at(res, "protocol", "%q is not one of A, B, C", v.GetProtocol())
	}
	if v.GetAbsent() {
		if v.GetConfirm() != v.GetName() {
			c.at(res, "confirm_destroy", "state: absent destroys volume %q and its data on every node: confirm it with confirm_destroy: %s", v.GetName(), v.GetName())
		}
	} else {
		if v.GetSizeBytes() < MinVolumeSize || v.GetSizeBytes() > MaxVolumeSize || v.GetSizeBytes()%(1<<20) != 0 {
			c.at(res, "size", "size %d bytes: want a whole number of MiB from 16M to 1P", v.GetSizeBytes())
		}
		if v.GetConfirm() != "" {
			c.at(res, "confirm_destroy", "confirm_destroy is only for state: absent")
		}
	}
	if p := v.GetPool(); p == nil {
		if !v.GetAbsent() {
			c.at(res, "pool", "required")
		}
	} else {
		if p.GetDisk() != "" || !v.GetAbsent() {
			c.atErr(res, "pool.disk", CheckDrbdDevice("disk", p.GetDisk()))
		}
		c.atErr(res, "pool.vg", CheckLVMName("vg", p.GetVg()))
		c.atErr(res, "pool.thin_pool", CheckLVMName("thin_pool", p.GetThinPool()))
	}
	for _, key := range sortedKeys(v.GetOptions()) {
		if err := CheckDrbdOptionKey(key); err != nil {
			c.atErr(res, "options."+key, err)
		} else {
			c.atErr(res, "options."+key, CheckDrbdOptionValue(key, v.GetOptions()[key]))
		}
	}
	if v.GetMinor() != 0 || v.GetPort() != 0 || len(v.GetPeers()) > 0 || v.GetInitialPrimary() != "" || len(v.GetDisklessPeers()) > 0 {
		c.at(res, "", "minor, port, peers and initial_primary are rendered by the coordinators, not set in a site")
	}
}

// volumeRefs checks a volume's roles, and that its name is declared once
// in the site and names no drbd resource (both would be
// /etc/drbd.d/NAME.res).
func (c *checker) volumeRefs(res *hivev1.Resource, s *siteInfo) {
	v := res.GetVolume()
	if r := v.GetReplicaRole(); r != "" {
		s.role(c, res, "replicas", r)
	}
	if r := v.GetDisklessRole(); r != "" {
		s.role(c, res, "diskless", r)
		if r == v.GetReplicaRole() {
			c.at(res, "diskless", "role %q cannot be both the replicas and the diskless role", r)
		}
	}
	earlier := true
	for _, rn := range s.roleNames {
		for _, other := range s.roles[rn].GetResources() {
			if other == res {
				earlier = false
				continue
			}
			if ov := other.GetVolume(); earlier && ov != nil && ov.GetName() == v.GetName() {
				c.at(res, "name", "volume %q is already declared at %s: a volume is declared once in a site", v.GetName(), sourceOf(c, other))
			}
			if od := other.GetDrbd(); od != nil && od.GetName() == v.GetName() {
				c.at(res, "name", "volume %q has the name of drbd resource %q (%s): both would be /etc/drbd.d/%s.res", v.GetName(), od.GetName(), sourceOf(c, other), v.GetName())
			}
		}
	}
}

func sourceOf(c *checker, res *hivev1.Resource) string {
	if s := res.GetSource(); s != "" {
		return s
	}
	return c.d.resPath[res]
}
