package pkg

import (
	"strconv"
	"strings"

	rpmutils "github.com/sassoftware/go-rpmutils"
)

// DebCompare compares two Debian versions ([epoch:]upstream[-revision]) by
// dpkg's algorithm (deb-version(7)): -1, 0 or 1.
func DebCompare(a, b string) int {
	ea, ua, ra := debSplit(a)
	eb, ub, rb := debSplit(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := verrevcmp(ua, ub); c != 0 {
		return c
	}
	return verrevcmp(ra, rb)
}

func debSplit(v string) (epoch int, upstream, revision string) {
	v = strings.TrimSpace(v)
	if e, rest, ok := strings.Cut(v, ":"); ok {
		epoch, _ = strconv.Atoi(e)
		v = rest
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

// order is dpkg's character weight: ~ sorts before everything, even the
// end of the string; letters before non-letters.
func order(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return 0
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return int(c)
	case c == '~':
		return -1
	case c != 0:
		return int(c) + 256
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func verrevcmp(a, b string) int {
	at := func(s string, k int) byte {
		if k < len(s) {
			return s[k]
		}
		return 0
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		firstDiff := 0
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := order(at(a, i)), order(at(b, j))
			if ac != bc {
				return sign(ac - bc)
			}
			i++
			j++
		}
		for at(a, i) == '0' {
			i++
		}
		for at(b, j) == '0' {
			j++
		}
		for isDigit(at(a, i)) && isDigit(at(b, j)) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if isDigit(at(a, i)) {
			return 1
		}
		if isDigit(at(b, j)) {
			return -1
		}
		if firstDiff != 0 {
			return sign(firstDiff)
		}
	}
	return 0
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

// RPMCompare compares two RPM versions ([epoch:]version[-release]) with
// rpmutils.Vercmp on each part; a missing epoch is 0.
func RPMCompare(a, b string) int {
	ea, va, ra := rpmSplit(a)
	eb, vb, rb := rpmSplit(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if c := rpmutils.Vercmp(va, vb); c != 0 {
		return c
	}
	return rpmutils.Vercmp(ra, rb)
}

func rpmSplit(v string) (epoch int, version, release string) {
	if e, rest, ok := strings.Cut(v, ":"); ok {
		epoch, _ = strconv.Atoi(e)
		v = rest
	}
	version, release, _ = strings.Cut(v, "-")
	return epoch, version, release
}

// Matches reports whether the installed version satisfies a pin: equal by
// the family's rules; a pin without revision/release matches any
// revision/release of that upstream version; a missing epoch is 0.
func Matches(debian bool, installed, pin string) bool {
	if pin == "" {
		return true
	}
	if debian {
		if !strings.Contains(pin, "-") {
			e, u, _ := debSplit(installed)
			installed = strconv.Itoa(e) + ":" + u
			if !strings.Contains(pin, ":") {
				pin = "0:" + pin
			}
		}
		return DebCompare(installed, pin) == 0
	}
	if !strings.Contains(pin, "-") {
		e, v, _ := rpmSplit(installed)
		installed = strconv.Itoa(e) + ":" + v
	}
	return RPMCompare(installed, pin) == 0
}
