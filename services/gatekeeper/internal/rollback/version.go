package rollback

import (
	"strings"

	"golang.org/x/mod/semver"
)

// Compare orders two versions of one name: -1 if a is lower than b, 0 if
// they are the same version, +1 if a is higher (decision 0078).
//
// Versions that are semantic versions (MAJOR.MINOR.PATCH with an optional
// pre-release and build, an optional leading "v") are ordered by semver
// precedence; build metadata is ignored, so 1.2.3+a and 1.2.3+b compare
// equal. Every version that is not a semantic version is lower than every
// one that is, so moving from a semantic version to another scheme needs a
// rollback approval. Versions that are not semantic versions are ordered
// among themselves naturally: runs of digits by their number (build-9 is
// lower than build-10, 2024.01.9 lower than 2024.01.10), other runs byte by
// byte; versions that differ only in leading zeros are ordered by their
// bytes, so only identical strings compare equal.
func Compare(a, b string) int {
	sa, sb := canonical(a), canonical(b)
	switch {
	case sa != "" && sb != "":
		return semver.Compare(sa, sb)
	case sa != "":
		return 1
	case sb != "":
		return -1
	default:
		if c := natural(a, b); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	}
}

// natural compares a and b run by run: a run of digits with a run of
// digits by number, anything else byte by byte.
func natural(a, b string) int {
	for a != "" && b != "" {
		ra, rb := run(a), run(b)
		a, b = a[len(ra):], b[len(rb):]
		if isDigit(ra[0]) && isDigit(rb[0]) {
			na, nb := strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if c := cmpInt(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			continue
		}
		if c := strings.Compare(ra, rb); c != 0 {
			return c
		}
	}
	return cmpInt(len(a), len(b))
}

// run returns the leading run of s: all digits or no digits; s is not
// empty.
func run(s string) string {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i]
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// canonical returns v as a "v"-prefixed full semantic version, or "" if it
// is not one. Shortened forms semver accepts ("v1", "v1.2") are not
// semantic versions here.
func canonical(v string) string {
	if !strings.HasPrefix(v, "v") {
		v = "v" + v
	}
	if !semver.IsValid(v) {
		return ""
	}
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	core, _, _ = strings.Cut(core, "+")
	if strings.Count(core, ".") != 2 {
		return ""
	}
	return v
}
