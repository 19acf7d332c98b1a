package approvals

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
)

// ParseQuorum parses the --quorum flag, "prod=2,staging=1": a channel's
// quorum is the number of distinct approvals its artifacts need. Channels
// not listed need none; empty is no quorum anywhere.
func ParseQuorum(s string) (map[string]int, error) {
	q := map[string]int{}
	if strings.TrimSpace(s) == "" {
		return q, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		ch, n, ok := strings.Cut(strings.TrimSpace(item), "=")
		v, err := strconv.Atoi(n)
		switch {
		case !ok || err != nil:
			return nil, fmt.Errorf("--quorum %q: want CHANNEL=N[,CHANNEL=N...], e.g. prod=2,staging=1", s)
		case !artifact.ValidChannel(ch):
			return nil, fmt.Errorf("--quorum: channel %q: up to %d letters, digits, '.', '_' or '-'", ch, artifact.MaxChannelLen)
		case v < 0 || v > maxQuorum:
			return nil, fmt.Errorf("--quorum %s=%d: want 0 to %d", ch, v, maxQuorum)
		}
		if _, dup := q[ch]; dup {
			return nil, fmt.Errorf("--quorum: channel %q given twice", ch)
		}
		q[ch] = v
	}
	return q, nil
}

// ParseApprovers parses the --approvers values, each a SPIFFE ID or a
// comma-separated list of them.
func ParseApprovers(values []string) ([]spiffeid.ID, error) {
	var ids []spiffeid.ID
	seen := map[spiffeid.ID]bool{}
	for _, v := range values {
		for s := range strings.SplitSeq(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			id, err := spiffeid.FromString(s)
			if err != nil {
				return nil, fmt.Errorf("--approvers %q: %w", s, err)
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}
