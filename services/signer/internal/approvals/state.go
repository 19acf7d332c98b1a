package approvals

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/artifact"
	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/strictjson"
)

// stateVersion is the state file's format version.
const stateVersion = 1

// Bounds of a state file, so that a damaged one cannot exhaust memory.
const (
	maxStateSize    = 256 << 20
	maxRequests     = 1 << 20
	maxApprovals    = 1000
	maxFieldLen     = 1024
	stateFileName   = "approvals.json"
	stateFileMode   = 0o600
	stateDirMode    = 0o700
	requestIDLength = 16
)

var (
	errCorrupt = errors.New("corrupt")
	idPattern  = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

type stateJSON struct {
	Version  int        `json:"version"`
	Requests []*Request `json:"requests"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFileName) }

// loadState reads the requests from dir's state file; a missing file is an
// empty state. A file that does not parse is an error saying what to do.
func loadState(dir string) ([]*Request, error) {
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return nil, fmt.Errorf("approval state directory: %w", err)
	}
	path := statePath(dir)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read approval state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read approval state %s: %w", path, err)
	}
	reqs, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("approval state %s: %w: the signer does not start with it, so that no approval is lost or forged; "+
			"restore the file from a backup, or move it aside to start with no approval requests (pending uploads then need new approvals)", path, err)
	}
	return reqs, nil
}

// parseState parses and checks a state file.
func parseState(b []byte) ([]*Request, error) {
	var st stateJSON
	if err := strictjson.Decode(b, maxStateSize, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errCorrupt, st.Version, stateVersion)
	}
	if len(st.Requests) > maxRequests {
		return nil, fmt.Errorf("%w: %d requests, limit %d", errCorrupt, len(st.Requests), maxRequests)
	}
	seen := map[string]bool{}
	for i, r := range st.Requests {
		if r == nil {
			return nil, fmt.Errorf("%w: request %d is null", errCorrupt, i)
		}
		if err := checkRequest(r); err != nil {
			return nil, fmt.Errorf("%w: request %d (%q): %v", errCorrupt, i, r.ID, err)
		}
		if seen[r.ID] {
			return nil, fmt.Errorf("%w: request id %s appears twice", errCorrupt, r.ID)
		}
		seen[r.ID] = true
	}
	return st.Requests, nil
}

func checkRequest(r *Request) error {
	switch {
	case !idPattern.MatchString(r.ID):
		return fmt.Errorf("id: want %d lowercase hex digits", requestIDLength)
	case !digest.Valid(r.Digest):
		return errors.New("digest: want sha256:<64 lowercase hex>")
	case !artifact.ValidName(r.Name), !artifact.ValidVersion(r.Version), !artifact.ValidChannel(r.Channel):
		return errors.New("name, version or channel invalid")
	case r.KeyName == "" || len(r.KeyName) > maxFieldLen || len(r.SourceRepo) > maxFieldLen || len(r.SourceCommit) > maxFieldLen:
		return errors.New("key name missing, or a field too long")
	case r.State != Pending && r.State != Approved && r.State != Rejected && r.State != Signed:
		return fmt.Errorf("state %q", r.State)
	case r.Quorum < 1 || r.Quorum > maxQuorum:
		return fmt.Errorf("quorum %d: want 1 to %d", r.Quorum, maxQuorum)
	case r.CreatedAt.IsZero() || r.ExpiresAt.Before(r.CreatedAt):
		return errors.New("created_at missing or after expires_at")
	case (r.State == Rejected) != (r.RejectedBy != "") || (r.State == Rejected) != (r.RejectReason != ""):
		return errors.New("rejected_by and reject_reason go with state rejected, and only with it")
	case len(r.RejectReason) > MaxReasonLen:
		return errors.New("reject_reason too long")
	case len(r.Approvals) > maxApprovals:
		return fmt.Errorf("%d approvals, limit %d", len(r.Approvals), maxApprovals)
	}
	if _, err := spiffeid.FromString(r.BuilderID); err != nil {
		return fmt.Errorf("builder_id: %v", err)
	}
	if r.RejectedBy != "" {
		if _, err := spiffeid.FromString(r.RejectedBy); err != nil {
			return fmt.Errorf("rejected_by: %v", err)
		}
	}
	approvers := map[string]bool{}
	for _, a := range r.Approvals {
		if _, err := spiffeid.FromString(a.Approver); err != nil {
			return fmt.Errorf("approver: %v", err)
		}
		if approvers[a.Approver] {
			return fmt.Errorf("approver %s appears twice", a.Approver)
		}
		approvers[a.Approver] = true
		if a.ApprovedAt.IsZero() || a.ExpiresAt.Before(a.ApprovedAt) {
			return fmt.Errorf("approval by %s: approved_at missing or after expires_at", a.Approver)
		}
	}
	if strings.ContainsAny(r.KeyName+r.SourceRepo+r.SourceCommit, "\x00\n") {
		return errors.New("control characters in a field")
	}
	return nil
}

// marshalState encodes requests as a state file.
func marshalState(reqs []*Request) ([]byte, error) {
	sorted := make([]Request, len(reqs))
	for i, r := range reqs {
		sorted[i] = *r
	}
	sortRequests(sorted)
	st := stateJSON{Version: stateVersion, Requests: make([]*Request, len(sorted))}
	for i := range sorted {
		st.Requests[i] = &sorted[i]
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// writeState replaces the state file atomically and durably: temporary
// file, fsync, rename, fsync of the directory.
func writeState(path string, reqs []*Request) error {
	b, err := marshalState(reqs)
	if err != nil {
		return fmt.Errorf("encode approval state: %w", err)
	}
	if err := daemon.WriteFileAtomic(path, b, stateFileMode); err != nil {
		return fmt.Errorf("approval state: %w", err)
	}
	return nil
}
