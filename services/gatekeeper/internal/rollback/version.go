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
// one that is, and such versions are ordered among themselves byte by
// byte. The rule errs towards calling a change a rollback: moving from a
// semantic version to another scheme, or between non-semver versions
// whose bytes go down (build-9 to build-10), needs a rollback approval.
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
		return strings.Compare(a, b)
	}
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
