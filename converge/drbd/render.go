package drbd

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	hivev1 "github.com/hivefleet/hive/proto/hive/v1"
	"github.com/hivefleet/hive/site"
)

// Errors of rendering; each is wrapped with the details.
var (
	// ErrInvalid is wrapped when a field of the resource is malformed.
	ErrInvalid = errors.New("invalid drbd resource")
	// ErrNotMember is wrapped when this node is not among the resource's
	// peers, or a peer has no address (it is not a live member).
	ErrNotMember = errors.New("drbd peer not a member")
	// ErrClash is wrapped when two resources on the node use the same port
	// or minor.
	ErrClash = errors.New("drbd port or minor clash")
)

// MaxMinor is the highest DRBD device minor.
const MaxMinor = 1<<20 - 1

// Peer is a peer as rendered, with its node id settled.
type Peer struct {
	Name   string
	Addr   netip.Addr
	NodeID uint32
}

// Spec is a resource checked and ready to render.
type Spec struct {
	Name     string
	Minor    uint32
	Disk     string
	MetaDisk string
	Port     uint16
	Protocol string
	Self     string
	Peers    []Peer
	// Options by section, each sorted by name.
	Options map[string][][2]string
	// Diskless names the peers that attach without a disk ("disk none"
	// in their "on" section); only volumes (converge/volume) set it.
	Diskless map[string]bool
	// Owner is "" for a drbd resource and "volume" for a volume's
	// resource file: recorded in the "# hive:" line, so that each provider
	// prunes only its own files while both see every number in use.
	Owner string
}

// Check validates d for node self and settles defaults: meta-disk
// "internal", protocol C, node ids by sorted name when none is set.
func Check(d *hivev1.Drbd, self string) (*Spec, error) {
	c := &Spec{Name: d.GetName(), Minor: d.GetMinor(), Disk: d.GetDisk(), MetaDisk: d.GetMetaDisk(), Protocol: strings.ToUpper(d.GetProtocol()), Self: self}
	if err := site.CheckDrbdName(c.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Minor > MaxMinor {
		return nil, fmt.Errorf("%w: minor %d above %d", ErrInvalid, c.Minor, MaxMinor)
	}
	if err := checkDevice("disk", c.Disk); err != nil {
		return nil, err
	}
	if c.MetaDisk == "" {
		c.MetaDisk = "internal"
	}
	if c.MetaDisk != "internal" {
		if err := checkDevice("meta_disk", c.MetaDisk); err != nil {
			return nil, err
		}
	}
	if d.GetPort() == 0 || d.GetPort() > 65535 {
		return nil, fmt.Errorf("%w: port %d: want 1 to 65535", ErrInvalid, d.GetPort())
	}
	c.Port = uint16(d.GetPort())
	if c.Protocol == "" {
		c.Protocol = "C"
	}
	if c.Protocol != "A" && c.Protocol != "B" && c.Protocol != "C" {
		return nil, fmt.Errorf("%w: protocol %q: want A, B or C", ErrInvalid, d.GetProtocol())
	}
	opts, err := checkOptions(d.GetOptions())
	if err != nil {
		return nil, err
	}
	c.Options = opts
	if err := c.settlePeers(d); err != nil {
		return nil, err
	}
	return c, nil
}

func checkDevice(field, p string) error {
	if err := site.CheckDrbdDevice(field, p); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

func checkOptions(in map[string]string) (map[string][][2]string, error) {
	out := map[string][][2]string{}
	keys := make([]string, 0, len(in))
	for k := range in {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := site.CheckDrbdOptionKey(k); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		sec, name, _ := strings.Cut(k, "/")
		v := in[k]
		if err := site.CheckDrbdOptionValue(k, v); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out[sec] = append(out[sec], [2]string{name, v})
	}
	return out, nil
}

func (c *Spec) settlePeers(d *hivev1.Drbd) error {
	peers := d.GetPeers()
	if len(peers) < 2 {
		names := make([]string, len(peers))
		for i, p := range peers {
			names[i] = p.GetName()
		}
		return fmt.Errorf("%w: drbd %s needs at least two peers holding role %q, has %d %v", ErrNotMember, c.Name, d.GetPeerRole(), len(peers), names)
	}
	if len(peers) > 32 {
		return fmt.Errorf("%w: %d peers, drbd allows 32", ErrInvalid, len(peers))
	}
	anyID := false
	for _, p := range peers {
		if p.GetNodeId() != 0 {
			anyID = true
		}
	}
	sorted := append([]*hivev1.DrbdPeer(nil), peers...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetName() < sorted[j].GetName() })
	seenName, seenID := map[string]bool{}, map[uint32]string{}
	self := false
	for i, p := range sorted {
		if site.CheckDrbdName(p.GetName()) != nil {
			return fmt.Errorf("%w: peer name %q", ErrInvalid, p.GetName())
		}
		if seenName[p.GetName()] {
			return fmt.Errorf("%w: peer %s listed twice", ErrInvalid, p.GetName())
		}
		seenName[p.GetName()] = true
		if p.GetAddress() == "" {
			return fmt.Errorf("%w: peer %s has no address (not a live member of the pool)", ErrNotMember, p.GetName())
		}
		a, err := netip.ParseAddr(p.GetAddress())
		if err != nil || a.Zone() != "" {
			return fmt.Errorf("%w: peer %s address %q is not an IP address", ErrInvalid, p.GetName(), p.GetAddress())
		}
		id := p.GetNodeId()
		if !anyID {
			id = uint32(i)
		}
		if id > 31 {
			return fmt.Errorf("%w: peer %s node id %d above 31", ErrInvalid, p.GetName(), id)
		}
		if o, dup := seenID[id]; dup {
			return fmt.Errorf("%w: peers %s and %s share node id %d", ErrInvalid, o, p.GetName(), id)
		}
		seenID[id] = p.GetName()
		if p.GetName() == c.Self {
			self = true
		}
		c.Peers = append(c.Peers, Peer{Name: p.GetName(), Addr: a.Unmap(), NodeID: id})
	}
	if !self {
		names := make([]string, len(c.Peers))
		for i, p := range c.Peers {
			names[i] = p.Name
		}
		return fmt.Errorf("%w: this node %q is not among the peers %v of drbd %s", ErrNotMember, c.Self, names, c.Name)
	}
	return nil
}

// Header is the first line of every file hive renders; Prune only
// touches files that start with it.
const Header = "# Managed by hive; changes are overwritten."

// Render spells the resource as a drbd.conf resource section, for
// /etc/drbd.d/<name>.res. The "hive:" comment line records port and minor
// for the clash check and the node name for Prune.
func (c *Spec) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n# hive: resource=%s port=%d minor=%d node=%s", Header, c.Name, c.Port, c.Minor, c.Self)
	if c.Owner != "" {
		fmt.Fprintf(&b, " owner=%s", c.Owner)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "resource %q {\n", c.Name)
	fmt.Fprintf(&b, "    device minor %d;\n", c.Minor)
	fmt.Fprintf(&b, "    disk %q;\n", c.Disk)
	if c.MetaDisk == "internal" {
		b.WriteString("    meta-disk internal;\n")
	} else {
		fmt.Fprintf(&b, "    meta-disk %q;\n", c.MetaDisk)
	}
	for _, sec := range []string{"options", "net", "disk", "handlers", "startup"} {
		opts := c.Options[sec]
		if sec == "net" {
			opts = append([][2]string{{"protocol", c.Protocol}}, opts...)
		}
		if len(opts) == 0 {
			continue
		}
		fmt.Fprintf(&b, "    %s {\n", sec)
		for _, o := range opts {
			v := o[1]
			if strings.Contains(v, " ") {
				v = strconv.Quote(v)
			}
			fmt.Fprintf(&b, "        %s %s;\n", o[0], v)
		}
		b.WriteString("    }\n")
	}
	hosts := make([]string, len(c.Peers))
	for i, p := range c.Peers {
		hosts[i] = strconv.Quote(p.Name)
		disk := ""
		if c.Diskless[p.Name] {
			disk = "        disk none;\n"
		}
		fmt.Fprintf(&b, "    on %q {\n%s        node-id %d;\n        address %s;\n    }\n", p.Name, disk, p.NodeID, addr(p.Addr, c.Port))
	}
	fmt.Fprintf(&b, "    connection-mesh {\n        hosts %s;\n    }\n", strings.Join(hosts, " "))
	b.WriteString("}\n")
	return b.String()
}

func addr(a netip.Addr, port uint16) string {
	if a.Is4() {
		return fmt.Sprintf("ipv4 %s:%d", a, port)
	}
	return fmt.Sprintf("ipv6 [%s]:%d", a, port)
}

// hiveLine parses the "# hive:" line of a rendered file.
var hiveLine = regexp.MustCompile(`(?m)^# hive: resource=(\S+) port=(\d+) minor=(\d+)(?: node=(\S+))?(?: owner=(\S+))?$`)

// fileInfo is what the clash check needs from a rendered file.
type fileInfo struct {
	name  string
	port  uint16
	minor uint32
	node  string // the node the file was rendered for ("on" section)
	owner string // Spec.Owner
}

func parseHiveFile(text string) (fileInfo, bool) {
	if !strings.HasPrefix(text, Header+"\n") {
		return fileInfo{}, false
	}
	m := hiveLine.FindStringSubmatch(text)
	if m == nil {
		return fileInfo{}, false
	}
	port, err1 := strconv.ParseUint(m[2], 10, 16)
	minor, err2 := strconv.ParseUint(m[3], 10, 32)
	if err1 != nil || err2 != nil {
		return fileInfo{}, false
	}
	return fileInfo{name: m[1], port: uint16(port), minor: uint32(minor), node: m[4], owner: m[5]}, true
}
