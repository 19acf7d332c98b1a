package attest

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
)

// BackupPredicateType is the predicate of a backup-set statement: its one
// subject is the set's manifest.json, by SHA-256; the manifest lists every
// file of the set by SHA-256 (docs/decisions/0056-backup-set-format.md).
const BackupPredicateType = "https://custody.dev/backup/v1"

// BackupManifestName is the subject name of a backup statement.
const BackupManifestName = "manifest.json"

// Backup is what a backup statement says about one backup set.
type Backup struct {
	// ManifestDigest is "sha256:<hex>" of manifest.json.
	ManifestDigest string
	// Site names the backed-up site (free text, for people).
	Site    string
	Created time.Time
	// LogOrigin and LogSize are the co-signed checkpoint the set's log
	// tiles must reproduce.
	LogOrigin string
	LogSize   uint64
	// Files is the number of files the manifest lists.
	Files int
}

type backupJSON struct {
	Site      string    `json:"site"`
	Created   time.Time `json:"created"`
	LogOrigin string    `json:"logOrigin"`
	LogSize   uint64    `json:"logSize"`
	Files     int       `json:"files"`
}

// BackupStatement encodes b as an in-toto Statement v1 for the signer's
// SignBackupManifest.
func BackupStatement(b Backup) ([]byte, error) {
	h, err := digest.Parse(b.ManifestDigest)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest digest: %v", ErrMalformed, err)
	}
	pred, err := json.Marshal(backupJSON{Site: b.Site, Created: b.Created.UTC(), LogOrigin: b.LogOrigin, LogSize: b.LogSize, Files: b.Files})
	if err != nil {
		return nil, err
	}
	return json.Marshal(statementJSON{
		Type: StatementType, PredicateType: BackupPredicateType, Predicate: pred,
		Subject: []Subject{{Name: BackupManifestName, Digest: map[string]string{"sha256": h}}},
	})
}

// Backup reads a backup statement back. It fails unless the predicate is
// BackupPredicateType with exactly one sha256 subject named manifest.json.
func (s *Statement) Backup() (*Backup, error) {
	if s.PredicateType != BackupPredicateType {
		return nil, fmt.Errorf("%w: predicate type %q, want %s", ErrMalformed, quote.Prefix(s.PredicateType), BackupPredicateType)
	}
	name, d, err := s.single()
	if err != nil {
		return nil, err
	}
	if name != BackupManifestName {
		return nil, fmt.Errorf("%w: subject %q, want %s", ErrMalformed, quote.Prefix(name), BackupManifestName)
	}
	var p backupJSON
	if err := strictjson.Decode(s.Predicate, MaxEnvelopeSize, &p); err != nil {
		return nil, fmt.Errorf("%w: backup predicate: %v", ErrMalformed, err)
	}
	if p.Created.IsZero() || p.Files < 1 || p.LogOrigin == "" {
		return nil, fmt.Errorf("%w: backup predicate needs created, logOrigin and files ≥ 1", ErrMalformed)
	}
	return &Backup{ManifestDigest: d, Site: p.Site, Created: p.Created, LogOrigin: p.LogOrigin, LogSize: p.LogSize, Files: p.Files}, nil
}
