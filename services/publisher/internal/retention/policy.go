// Package retention deletes old versions of artifacts from the publisher's
// store by a per-channel policy, asking the catalog first what must be kept.
//
// A run plans everything before it deletes anything: the channel's artifacts
// come from the catalog, and each selected digest is checked against the
// catalog's events (deployment.*, rollback.*, approval.*) and deployments.
// If any question cannot be answered, the run deletes nothing. Each
// deletion is journalled, then destroys the blob's wrapped data key, then its
// ciphertext, then tombstones the binding, then logs
// artifact.retention-deleted; a journal left by a crash is finished at the
// next start.
package retention

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/custody-dev/custody/libs/strictjson"
)

// ErrInvalid is a policy that cannot be used.
var ErrInvalid = errors.New("invalid retention policy")

// Rule is one channel's retention: keep the last KeepLast versions of each
// name, and none older than MaxAge; either may be 0 (unset), not both. The
// newest version of a name is always kept.
type Rule struct {
	KeepLast int           `json:"keep_last"`
	MaxAge   time.Duration `json:"-"`
	// MaxAgeText is MaxAge as written in the file ("720h").
	MaxAgeText string `json:"max_age"`
}

// Policy is the retention of each named channel. A channel it does not
// name is never touched.
type Policy struct {
	Channels map[string]*Rule `json:"channels"`
}

const (
	maxPolicyFile = 64 << 10
	maxChannels   = 256
	maxChannelLen = 128
	maxKeepLast   = 1 << 20
)

// ParsePolicy strictly decodes a policy file:
//
//	{"channels": {"dev": {"keep_last": 10, "max_age": "720h"}}}
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	if err := strictjson.Decode(b, maxPolicyFile, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(p.Channels) == 0 {
		return nil, fmt.Errorf("%w: no channels: name at least one under \"channels\"", ErrInvalid)
	}
	if len(p.Channels) > maxChannels {
		return nil, fmt.Errorf("%w: %d channels, at most %d", ErrInvalid, len(p.Channels), maxChannels)
	}
	for ch, r := range p.Channels {
		if ch == "" || len(ch) > maxChannelLen || strings.IndexFunc(ch, func(c rune) bool { return !unicode.IsPrint(c) || c == ' ' }) >= 0 {
			return nil, fmt.Errorf("%w: channel name %q: want 1-%d printable characters without spaces", ErrInvalid, ch, maxChannelLen)
		}
		if r == nil {
			return nil, fmt.Errorf("%w: channel %q: want an object with keep_last and/or max_age", ErrInvalid, ch)
		}
		if r.KeepLast < 0 || r.KeepLast > maxKeepLast {
			return nil, fmt.Errorf("%w: channel %q: keep_last %d: want 0 (unset) to %d", ErrInvalid, ch, r.KeepLast, maxKeepLast)
		}
		if r.MaxAgeText != "" {
			d, err := time.ParseDuration(r.MaxAgeText)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%w: channel %q: max_age %q: want a positive duration such as \"720h\"", ErrInvalid, ch, r.MaxAgeText)
			}
			r.MaxAge = d
		}
		if r.KeepLast == 0 && r.MaxAge == 0 {
			return nil, fmt.Errorf("%w: channel %q: set keep_last, max_age or both", ErrInvalid, ch)
		}
	}
	return &p, nil
}

// LoadPolicy reads and parses a policy file.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("retention policy: %w", err)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("retention policy %s: %w", path, err)
	}
	return p, nil
}

func (p *Policy) channels() []string {
	out := make([]string, 0, len(p.Channels))
	for ch := range p.Channels {
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}
