package site

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Field rules of the host baseline kinds (user, group, hosts, hostname,
// timezone, locale), shared by the parser, Check and the providers'
// validators.

var accountNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.-]{0,30}[a-z0-9_.$-]?$`)

// CheckAccountName checks a user or group name: the portable shadow-utils
// form (lower case, digits, '_', '.', '-', up to 32 characters, not all
// digits).
func CheckAccountName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s name must not be empty", what)
	}
	if !accountNameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: use a lower-case letter or '_' first, then lower-case letters, digits, '_', '.', '-' (at most 32 characters)", what, name)
	}
	return nil
}

// CheckAccountPath checks a home directory or login shell: absolute, clean,
// with no ':' or control characters (they would break /etc/passwd).
func CheckAccountPath(what, p string) error {
	if msg := checkPath(p); msg != "" {
		return fmt.Errorf("%s: %s", what, msg)
	}
	if strings.ContainsAny(p, ":\n\r\t ") {
		return fmt.Errorf("%s %q must not contain ':' or white space", what, p)
	}
	return nil
}

// CheckGecos checks a GECOS comment.
func CheckGecos(s string) error {
	if len(s) > 255 || strings.ContainsAny(s, ":\n\r\x00") {
		return fmt.Errorf("comment must be at most 255 characters with no ':' or newline")
	}
	return nil
}

// CheckAuthorizedKey checks one authorized_keys line: an OpenSSH public
// key, optionally with options and a comment.
func CheckAuthorizedKey(line string) error {
	if strings.ContainsAny(line, "\n\r\x00") {
		return errors.New("an authorized key is one line")
	}
	if _, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
		return fmt.Errorf("not an OpenSSH public key (type, base64 key, optional comment): %v", err)
	} else if len(rest) > 0 {
		return errors.New("more than one key on the line")
	}
	return nil
}

// CheckSudoRule checks the form of one sudoers rule (the part after the
// user or %group); visudo checks its syntax on the node.
func CheckSudoRule(rule string) error {
	switch {
	case strings.TrimSpace(rule) == "":
		return errors.New("empty sudo rule")
	case strings.ContainsAny(rule, "\n\r\x00\\"):
		return errors.New("a sudo rule is one line, without backslashes")
	case len(rule) > 1000:
		return errors.New("sudo rule longer than 1000 characters")
	case !strings.Contains(rule, "="):
		return fmt.Errorf("sudo rule %q: expected HOSTS=(RUNAS) COMMANDS, e.g. \"ALL=(ALL) NOPASSWD: ALL\"", rule)
	}
	return nil
}

var hostLabelRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// CheckHostName checks a host name (RFC 1123 labels, at most 253
// characters; max, when not 0, is a tighter limit).
func CheckHostName(name string, max int) error {
	if name == "" {
		return errors.New("host name must not be empty")
	}
	if max == 0 {
		max = 253
	}
	if len(name) > max {
		return fmt.Errorf("host name %q is longer than %d characters", name, max)
	}
	for _, l := range strings.Split(name, ".") {
		if !hostLabelRE.MatchString(l) {
			return fmt.Errorf("host name %q: each dot-separated label is 1-63 letters, digits or '-', not starting or ending with '-'", name)
		}
	}
	return nil
}

// CheckHostAddress checks the address of an /etc/hosts line.
func CheckHostAddress(a string) error {
	ip, err := netip.ParseAddr(a)
	if err != nil || ip.Zone() != "" {
		return fmt.Errorf("%q is not an IPv4 or IPv6 address", a)
	}
	if ip.String() != a {
		return fmt.Errorf("address %q: write it as %q", a, ip.String())
	}
	return nil
}

var zoneRE = regexp.MustCompile(`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`)

// CheckTimezone checks the form of an IANA time zone name ("Europe/Paris",
// "UTC"); the node checks that its zoneinfo has it.
func CheckTimezone(name string) error {
	if name == "" {
		return errors.New("time zone must not be empty")
	}
	if len(name) > 64 || !zoneRE.MatchString(name) {
		return fmt.Errorf("time zone %q: expected an IANA zone name such as \"Europe/Paris\" or \"UTC\"", name)
	}
	return nil
}

var localeRE = regexp.MustCompile(`^[A-Za-z0-9_.@+-]+$`)

// LocaleVariables are the variables a locale resource may set besides LANG.
var LocaleVariables = []string{"LANGUAGE", "LC_ADDRESS", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION", "LC_MEASUREMENT", "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC", "LC_PAPER", "LC_TELEPHONE", "LC_TIME"}

// CheckLocale checks a locale variable's value ("en_US.UTF-8"; LANGUAGE
// is a ':'-separated list).
func CheckLocale(variable, value string) error {
	if variable != "LANG" && !contains(LocaleVariables, variable) {
		return fmt.Errorf("unknown locale variable %q (allowed: %s)", variable, strings.Join(LocaleVariables, ", "))
	}
	parts := []string{value}
	if variable == "LANGUAGE" {
		parts = strings.Split(value, ":")
	}
	for _, p := range parts {
		if len(value) > 200 || !localeRE.MatchString(p) {
			return fmt.Errorf("%s %q: expected a locale name such as \"en_US.UTF-8\" or \"C.UTF-8\"", variable, value)
		}
	}
	return nil
}
