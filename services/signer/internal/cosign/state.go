package cosign

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/custody-dev/custody/libs/daemon"
	"github.com/custody-dev/custody/libs/strictjson"
)

// stateVersion is the format of the state file.
const stateVersion = 1

// stateFile is the JSON the co-signer persists: per log origin, the last
// checkpoint it co-signed.
type stateFile struct {
	Version int                  `json:"version"`
	Logs    map[string]*logState `json:"logs"`
}

// logState is the last co-signed checkpoint of one log.
type logState struct {
	Size uint64 `json:"size"`
	// RootHash is the checkpoint's RFC 6962 root hash.
	RootHash []byte `json:"root_hash"`
	// Checkpoint is the co-signed note as returned to the catalog.
	Checkpoint []byte `json:"checkpoint"`
}

// corruptAdvice says what to do about a state file that cannot be used.
const corruptAdvice = "restore the file from a backup; only if you have checked the log's current checkpoint out of band, " +
	"move the file away to trust the next checkpoint on first use"

// loadState reads the state file. A missing file is an empty state (trust on
// first use); anything unreadable is an error, never an empty state.
func loadState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &stateFile{Version: stateVersion, Logs: map[string]*logState{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read co-signing state %s: %w", path, err)
	}
	st, err := parseState(b)
	if err != nil {
		return nil, fmt.Errorf("co-signing state %s is corrupt: %v: %s", path, err, corruptAdvice)
	}
	return st, nil
}

// maxStateSize bounds cosign.json: a checkpoint per log origin is a few
// hundred bytes.
const maxStateSize = 1 << 20

func parseState(b []byte) (*stateFile, error) {
	var st stateFile
	if err := strictjson.Decode(b, maxStateSize, &st); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("version %d, want %d", st.Version, stateVersion)
	}
	if st.Logs == nil {
		st.Logs = map[string]*logState{}
	}
	for origin, ls := range st.Logs {
		if ls == nil {
			return nil, fmt.Errorf("log %q: no entry", origin)
		}
		body, err := parseNote(ls.Checkpoint)
		if err != nil {
			return nil, fmt.Errorf("log %q: checkpoint: %w", origin, err)
		}
		if body.origin != origin || body.size != ls.Size || !bytes.Equal(body.hash, ls.RootHash) || len(ls.RootHash) != sha256.Size {
			return nil, fmt.Errorf("log %q: size and root hash differ from the stored checkpoint", origin)
		}
	}
	return &st, nil
}

// save writes the state through a temporary file, fsync and rename.
func (st *stateFile) save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode co-signing state: %w", err)
	}
	if err := daemon.WriteFileAtomic(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save co-signing state: %w", err)
	}
	// The rename is durable only once the directory is synced: a checkpoint
	// must not be forgotten after it was handed out.
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("save co-signing state: %w", err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("save co-signing state: sync %s: %w", filepath.Dir(path), err)
	}
	return nil
}
