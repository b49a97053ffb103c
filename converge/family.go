package converge

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
)

// DetectFamily reads <root>/etc/os-release (or <root>/usr/lib/os-release)
// and returns the OS family from ID and ID_LIKE: debian/ubuntu → Debian,
// rhel/fedora/centos/rocky/alma → RHEL.
func DetectFamily(root string) (Family, error) {
	var data []byte
	var err error
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		var full string
		full, err = SecureJoin(rootOrSlash(root), p)
		if err != nil {
			return FamilyUnknown, err
		}
		data, err = os.ReadFile(full)
		if err == nil {
			break
		}
	}
	if err != nil {
		return FamilyUnknown, fmt.Errorf("detect os family: %w", err)
	}
	return FamilyFromOSRelease(data), nil
}

// FamilyFromOSRelease returns the family named by an os-release file.
func FamilyFromOSRelease(data []byte) Family {
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || (k != "ID" && k != "ID_LIKE") {
			continue
		}
		v = strings.Trim(v, `"'`)
		ids = append(ids, strings.Fields(v)...)
	}
	for _, id := range ids {
		switch strings.ToLower(id) {
		case "debian", "ubuntu", "raspbian", "linuxmint":
			return FamilyDebian
		case "rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn":
			return FamilyRHEL
		}
	}
	return FamilyUnknown
}

func rootOrSlash(r string) string {
	if r == "" {
		return "/"
	}
	return r
}
