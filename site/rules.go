package site

// Rules shared with the agents' providers: each function here is the one
// check both the site checker (Parse, Check) and the provider that would
// otherwise refuse the value on every agent call, so that `hivectl
// validate` and a push refuse, at file:line:col, everything an agent would
// refuse. A provider wraps the error with its own sentinel.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
)

var drbdNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// CheckDrbdName checks a DRBD resource name (it names /etc/drbd.d/NAME.res
// and the resource in drbd.conf).
func CheckDrbdName(name string) error {
	if !drbdNameRE.MatchString(name) {
		return fmt.Errorf("name %q: want a letter or digit, then letters, digits, '_', '.', '-' (at most 63)", name)
	}
	return nil
}

// CheckDrbdDevice checks a DRBD disk or meta-disk path: absolute, clean,
// and holding no character drbd.conf cannot quote.
func CheckDrbdDevice(field, p string) error {
	if p == "" || !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("%s %q: want an absolute, clean path", field, p)
	}
	if strings.ContainsAny(p, "\"; {}\t\n\\") {
		return fmt.Errorf("%s %q contains a character drbd.conf cannot hold (one of \" ; { } \\, a space, tab or newline)", field, p)
	}
	return nil
}

// DrbdOptionSections are the drbd.conf sections options may go to.
var DrbdOptionSections = map[string]bool{"net": true, "disk": true, "options": true, "handlers": true, "startup": true}

var (
	drbdOptKeyRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	drbdOptValRE = regexp.MustCompile(`^[A-Za-z0-9_./:,+@=% -]+$`)
)

// CheckDrbdOptionKey checks a DRBD option key, "section/name".
func CheckDrbdOptionKey(k string) error {
	sec, name, ok := strings.Cut(k, "/")
	if !ok || !DrbdOptionSections[sec] || !drbdOptKeyRE.MatchString(name) {
		return fmt.Errorf("option %q: want section/name with section net, disk, options, handlers or startup, e.g. \"net/verify-alg\"", k)
	}
	if sec == "net" && name == "protocol" {
		return fmt.Errorf("option %q: use the protocol field", k)
	}
	return nil
}

// CheckDrbdOptionValue checks a DRBD option value: it is written into
// drbd.conf unquoted, so ';', '{', '}', quotes and newlines would change
// the configuration's structure.
func CheckDrbdOptionValue(k, v string) error {
	if !drbdOptValRE.MatchString(v) {
		return fmt.Errorf("option %q value %q: only letters, digits, spaces and _./:,+@=%%- are allowed", k, v)
	}
	return nil
}

var pkgNameChars = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+_:-]*$`)

// CheckPackageName checks a Debian or RPM package name.
func CheckPackageName(n string) error {
	if !pkgNameChars.MatchString(n) || strings.HasSuffix(n, "-") {
		return fmt.Errorf("package name %q: want a letter or digit, then letters, digits and .+_:- (not ending in -)", n)
	}
	return nil
}

var pkgVersionRE = regexp.MustCompile(`^([0-9]+:)?[A-Za-z0-9][A-Za-z0-9.+~_-]*$`)

// CheckPackageVersion checks a version pin; "" pins nothing.
func CheckPackageVersion(v string) error {
	if v != "" && !pkgVersionRE.MatchString(v) {
		return fmt.Errorf("version %q: expected [epoch:]version[-release] made of letters, digits and .+~_-", v)
	}
	return nil
}

var repoNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// CheckRepoName checks a repository name (it names the .list/.repo file).
func CheckRepoName(n string) error {
	if len(n) > 128 || !repoNameRE.MatchString(n) {
		return fmt.Errorf("repo name %q: use letters, digits, '.', '_' and '-' only", n)
	}
	return nil
}

// CheckRepoWord checks a repository URL, suite, component or architecture:
// each is one word of a sources line.
func CheckRepoWord(what, s string) error {
	if strings.ContainsAny(s, " \t\n\r") {
		return fmt.Errorf("%s %q contains white space", what, s)
	}
	return nil
}

var ifaceRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,15}$`)

// CheckInterface checks a firewall interface name ("eth0", or a prefix
// wildcard "veth+"); whether it exists is checked at apply time.
func CheckInterface(name string) error {
	if name == "" {
		return nil
	}
	base := strings.TrimSuffix(name, "+")
	if len(name) > 15 || !ifaceRE.MatchString(base) {
		return fmt.Errorf("interface name %q must be 1 to 15 characters: letters, digits and _.@-, '+' as a trailing wildcard", name)
	}
	return nil
}

// CheckComment checks a firewall rule comment (iptables quotes it).
func CheckComment(c string) error {
	if len(c) > 255 {
		return errors.New("comment longer than 255 bytes")
	}
	for _, r := range c {
		if r < ' ' || r == 0x7f {
			return fmt.Errorf("comment contains control character %U", r)
		}
	}
	return nil
}

// CheckSecretName checks a secret name declared by a site.
func CheckSecretName(name string) error {
	if name == "" {
		return errors.New("secret name must not be empty")
	}
	if !validName(name) {
		return fmt.Errorf("secret name %q: use letters, digits, '.', '_', '-' and '/' only", name)
	}
	return nil
}

// CheckSigningKey checks that b is an ASCII-armored OpenPGP public key
// block: the armor lines, a base64 body whose CRC-24 checksum (when
// present) matches, and a first packet that is a public key (tag 6).
func CheckSigningKey(b []byte) error {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	const begin, end = "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----"
	i := strings.Index(s, begin)
	if i < 0 {
		return errors.New("not an ASCII-armored OpenPGP public key block")
	}
	body, _, ok := strings.Cut(s[i+len(begin):], end)
	if !ok {
		return errors.New("not an ASCII-armored OpenPGP public key block")
	}
	// Armor headers end at the first empty line.
	if k := strings.Index(body, "\n\n"); k >= 0 {
		body = body[k+2:]
	}
	var data, crc strings.Builder
	for _, line := range strings.Split(body, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "="):
			crc.WriteString(line[1:])
		default:
			data.WriteString(line)
		}
	}
	raw, err := base64.StdEncoding.DecodeString(data.String())
	if err != nil || len(raw) == 0 {
		return errors.New("armored body does not decode")
	}
	if crc.Len() > 0 {
		want, err := base64.StdEncoding.DecodeString(crc.String())
		if err != nil || len(want) != 3 {
			return errors.New("bad armor checksum line")
		}
		got := crc24(raw)
		if !bytes.Equal(want, []byte{byte(got >> 16), byte(got >> 8), byte(got)}) {
			return errors.New("armor checksum mismatch (damaged key)")
		}
	}
	tag := -1
	switch h := raw[0]; {
	case h&0x80 == 0:
	case h&0x40 != 0:
		tag = int(h & 0x3f)
	default:
		tag = int(h>>2) & 0x0f
	}
	if tag != 6 {
		return fmt.Errorf("first packet is not a public key (tag %d)", tag)
	}
	return nil
}

func crc24(d []byte) uint32 {
	const init, poly = 0xB704CE, 0x1864CFB
	crc := uint32(init)
	for _, b := range d {
		crc ^= uint32(b) << 16
		for range 8 {
			crc <<= 1
			if crc&0x1000000 != 0 {
				crc ^= poly
			}
		}
	}
	return crc & 0xFFFFFF
}
