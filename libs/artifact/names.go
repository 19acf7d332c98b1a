// Package artifact holds the rules for artifact names, versions and
// channels shared by every service that accepts them.
package artifact

import "strings"

// Length limits.
const (
	MaxNameLen        = 200
	MaxVersionLen     = 128
	MaxChannelLen     = 64
	MaxEnvironmentLen = 64
)

// ValidName reports whether s is a valid artifact name: 1 to 200 bytes of
// ASCII letters, digits and '.', '_', '-', '/', starting with a letter or
// digit, without empty path segments or "..".
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen || !alnum(s[0]) || strings.HasSuffix(s, "/") ||
		strings.Contains(s, "//") || strings.Contains(s, "..") {
		return false
	}
	return onlyChars(s, "._-/")
}

// ValidVersion reports whether s is a valid version: 1 to 128 bytes of
// ASCII letters, digits and '.', '_', '-', '+', starting with a letter or
// digit (SemVer, with pre-release and build metadata, fits).
func ValidVersion(s string) bool {
	return len(s) > 0 && len(s) <= MaxVersionLen && alnum(s[0]) && onlyChars(s, "._-+")
}

// ValidChannel reports whether s is a valid channel: 1 to 64 bytes of ASCII
// letters, digits and '.', '_', '-', starting with a letter or digit.
func ValidChannel(s string) bool {
	return len(s) > 0 && len(s) <= MaxChannelLen && alnum(s[0]) && onlyChars(s, "._-")
}

// ValidEnvironment reports whether s is a valid deployment environment, as
// admissions name it: 1 to 64 bytes of lowercase ASCII letters, digits, '-'
// and '_', starting with a letter or digit ("prod", "staging").
func ValidEnvironment(s string) bool {
	if s == "" || len(s) > MaxEnvironmentLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || (i > 0 && (c == '-' || c == '_'))) {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

func onlyChars(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		if !alnum(s[i]) && !strings.ContainsRune(extra, rune(s[i])) {
			return false
		}
	}
	return true
}
