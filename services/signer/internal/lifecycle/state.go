package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// stateFormat is the version of keys.json's layout.
const stateFormat = 1

// maxOutbox bounds the events waiting for the log.
const maxOutbox = 10000

// maxStateSize bounds keys.json: it holds a few lines per key version.
const maxStateSize = 16 << 20

// state is what the signer remembers about key versions beyond what the
// back end knows: when it first saw them, when they stopped signing, and
// revocations. It lives in <state-dir>/keys.json.
type state struct {
	Format   int                      `json:"format"`
	Versions map[string]*versionState `json:"versions"` // by key id
	// Outbox holds events that took effect but could not be logged yet;
	// they are logged in order as soon as the log is back.
	Outbox []outboxEvent `json:"outbox,omitempty"`
	// Purges holds revocations whose cache purge the broker has not
	// accepted yet; Run asks again until it does.
	Purges []pendingPurge `json:"purges,omitempty"`
}

// pendingPurge is a key revocation's purge not yet accepted by the broker.
type pendingPurge struct {
	KeyID     string    `json:"key_id"`
	Effective time.Time `json:"effective"`
	Reference string    `json:"reference"`
	Queued    time.Time `json:"queued"`
}

// maxPurges bounds the revocations whose purge waits for the broker.
const maxPurges = 1000

type outboxEvent struct {
	Type    string          `json:"type"`
	Details json.RawMessage `json:"details"`
	Queued  time.Time       `json:"queued"`
}

type versionState struct {
	Name      string     `json:"name"`
	Version   int        `json:"version"`
	FirstSeen time.Time  `json:"first_seen"`
	RetiredAt *time.Time `json:"retired_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Reason    string     `json:"revoke_reason,omitempty"`
	RevokedBy string     `json:"revoked_by,omitempty"`
}

// parseState reads keys.json strictly: unknown fields, a wrong format or
// inconsistent entries are errors, never a silent reset.
func parseState(b []byte) (*state, error) {
	var s state
	if err := strictjson.Decode(b, maxStateSize, &s); err != nil {
		return nil, err
	}
	if s.Format != stateFormat {
		return nil, fmt.Errorf("format %d, want %d", s.Format, stateFormat)
	}
	if s.Versions == nil {
		s.Versions = map[string]*versionState{}
	}
	if len(s.Outbox) > maxOutbox {
		return nil, fmt.Errorf("%d unlogged events, more than %d", len(s.Outbox), maxOutbox)
	}
	for i, e := range s.Outbox {
		if e.Type == "" || !json.Valid(e.Details) {
			return nil, fmt.Errorf("unlogged event %d is incomplete", i)
		}
	}
	if len(s.Purges) > maxPurges {
		return nil, fmt.Errorf("%d pending purges, more than %d", len(s.Purges), maxPurges)
	}
	for i, p := range s.Purges {
		if len(p.KeyID) != 64 || p.Reference == "" || p.Effective.IsZero() {
			return nil, fmt.Errorf("pending purge %d is incomplete", i)
		}
	}
	for id, v := range s.Versions {
		if v == nil || v.Name == "" || v.Version < 1 || len(id) != 64 {
			return nil, fmt.Errorf("entry %q is incomplete", quote.Prefix(id))
		}
		if v.RevokedAt != nil && v.Reason == "" {
			return nil, fmt.Errorf("entry %q: revoked without a reason", quote.Prefix(id))
		}
	}
	return &s, nil
}

// files is the signer's key-lifecycle directory: keys.json and every
// published trust-root version as trustroot/v<N>.json.
type files struct{ dir string }

func (f files) statePath() string { return filepath.Join(f.dir, "keys.json") }
func (f files) rootDir() string   { return filepath.Join(f.dir, "trustroot") }
func (f files) rootPath(v int64) string {
	return filepath.Join(f.rootDir(), fmt.Sprintf("v%08d.json", v))
}

func (f files) loadState() (*state, error) {
	b, err := os.ReadFile(f.statePath())
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Format: stateFormat, Versions: map[string]*versionState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key state: %w", err)
	}
	s, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("key state %s is corrupt (%v): restore it from backup; deleting it would forget revocations", f.statePath(), err)
	}
	return s, nil
}

func (f files) saveState(s *state) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return fmt.Errorf("key state: %w", err)
	}
	return daemon.WriteFileAtomic(f.statePath(), b, 0o600)
}

// loadRoots returns the stored trust-root envelopes, oldest first.
func (f files) loadRoots() ([][]byte, error) {
	ents, err := os.ReadDir(f.rootDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read trust roots: %w", err)
	}
	type file struct {
		v    int64
		name string
	}
	var fs []file
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") {
			continue // a temporary file of an interrupted write
		}
		v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(n, "v"), ".json"), 10, 64)
		if err != nil || !strings.HasPrefix(n, "v") || !strings.HasSuffix(n, ".json") {
			return nil, fmt.Errorf("unexpected file %s in %s: remove it", n, f.rootDir())
		}
		fs = append(fs, file{v, n})
	}
	slices.SortFunc(fs, func(a, b file) int { return int(a.v - b.v) })
	var out [][]byte
	for _, e := range fs {
		b, err := os.ReadFile(filepath.Join(f.rootDir(), e.name))
		if err != nil {
			return nil, fmt.Errorf("read trust root: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

func (f files) saveRoot(v int64, env []byte) error {
	if err := os.MkdirAll(f.rootDir(), 0o700); err != nil {
		return fmt.Errorf("trust roots: %w", err)
	}
	return daemon.WriteFileAtomic(f.rootPath(v), env, 0o644)
}
