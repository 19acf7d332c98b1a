// Package quote shortens untrusted input before it goes into an error
// message or a log line.
package quote

import (
	"strings"
	"unicode/utf8"
)

// MaxLen is how many bytes of the caller's input Prefix keeps.
const MaxLen = 64

// Prefix returns at most MaxLen bytes of s, cut at a character boundary and
// with invalid UTF-8 dropped, followed by "…" when anything was cut. Use it
// with %q for every piece of caller input that an error or log line repeats,
// so that a hostile caller can neither make errors large nor fill logs with
// its bytes.
func Prefix(s string) string {
	return Clip(s, MaxLen)
}

// Clip is Prefix with a limit of n bytes, for messages that wrap another
// error's text, which may itself repeat input.
func Clip(s string, n int) string {
	cut := len(s) > n
	if !cut && utf8.ValidString(s) {
		return s
	}
	if cut {
		s = s[:max(n, 0)]
	}
	s = strings.ToValidUTF8(s, "")
	if cut {
		return s + "…"
	}
	return s
}
