package backup

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
)

// Problem is one thing wrong with a backup set, naming the file.
type Problem struct {
	Path string `json:"path"`
	Kind string `json:"kind,omitempty"`
	// Row names a catalog row ("artifacts app@1.0.0", "events 12") in
	// Path, the catalog database.
	Row     string `json:"row,omitempty"`
	Problem string `json:"problem"`
}

// Report is what Verify found. OK is true only if Problems is empty.
type Report struct {
	Dir            string         `json:"dir"`
	OK             bool           `json:"ok"`
	Site           string         `json:"site,omitempty"`
	Created        time.Time      `json:"created,omitzero"`
	ManifestDigest string         `json:"manifest_digest,omitempty"`
	KeyID          string         `json:"backup_key_id,omitempty"`
	TrustRoot      int64          `json:"trust_root_version,omitempty"`
	Files          int            `json:"files"`
	Kinds          map[string]int `json:"kinds,omitempty"`
	LogOrigin      string         `json:"log_origin,omitempty"`
	LogSize        uint64         `json:"log_size"`
	// BlobsDecrypted counts blobs decrypted with the KEK to bytes of their
	// digest; -1 if that check was skipped.
	BlobsDecrypted int `json:"blobs_decrypted"`
	// RowsChecked counts catalog rows matched against the log; -1 if that
	// check was skipped.
	RowsChecked int       `json:"catalog_rows_checked"`
	Problems    []Problem `json:"problems"`
}

// MaxProblems bounds a report: a hostile set with a million bad files
// gets the first ones named and a count.
const MaxProblems = 1000

func (r *Report) add(p, kind, format string, args ...any) {
	r.addProblem(Problem{Path: p, Kind: kind, Problem: fmt.Sprintf(format, args...)})
}

func (r *Report) addProblem(p Problem) {
	switch {
	case len(r.Problems) < MaxProblems:
		r.Problems = append(r.Problems, p)
	case len(r.Problems) == MaxProblems:
		r.Problems = append(r.Problems, Problem{Path: ".", Problem: fmt.Sprintf("more than %d problems: the rest are not listed", MaxProblems)})
	}
}

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Pinned is the verifier's own trust root, from outside the set; the
	// set's newer versions are accepted only if they chain from it.
	Pinned []byte
	Now    func() time.Time
	// Blobs, if set, decrypts every blob of the set's publisher data
	// directory with the KEK and re-hashes its plaintext (publisher
	// verify-blobs). It returns the blobs that verified and the problems;
	// its error means the check could not run. Nil skips the check, and the
	// report says so.
	Blobs func(publisherDir string) (int, []Problem, error)
	// CatalogRows, if set, calls fn with every logged row of the set's
	// catalog database (catalog dump-rows); each is matched against the
	// log entry at its index and artifact envelopes are re-verified
	// against the trust root. Nil skips the check.
	CatalogRows func(db string, fn func(Row) error) error
}

// Row is a logged catalog row.
type Row struct {
	Table    string `json:"table"`
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Digest   string `json:"digest"`
	Type     string `json:"type"`
	LogIndex *int64 `json:"log_index"`
	Leaf     []byte `json:"leaf"`
	Envelope []byte `json:"envelope"`
}

// Verify checks a backup set without trusting anything in it: the trust
// roots it carries must chain from the pinned one; the manifest must be
// signed by a backup key of the newest; every file must be listed and have
// its listed digest, and no other file may be present; the log's entry
// bundles must reproduce the co-signed checkpoint and the level-0 hash
// tiles. Every problem is reported, naming the file. The error is for
// failures to check at all (an unreadable pinned root).
func Verify(dir string, o VerifyOptions) (*Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	trusted, err := trustroot.Pin(o.Pinned)
	if err != nil {
		return nil, fmt.Errorf("pinned trust root: %w", err)
	}
	rep := &Report{Dir: dir, Kinds: map[string]int{}, Problems: []Problem{}}
	defer func() { rep.OK = len(rep.Problems) == 0 }()

	// Trust roots: walk forward from the pin with the set's chain.
	chain, err := rootChain(dir)
	if err != nil {
		rep.add("data/signer/keys/trustroot", KindSigner, "%v", err)
	} else if err := trusted.UpdateChain(chain, o.Now()); err != nil {
		rep.add("data/signer/keys/trustroot", KindSigner, "trust roots do not chain from the pinned v%d: %v", trusted.Version(), err)
	}
	root, err := trusted.Current(o.Now())
	if err != nil {
		rep.add("data/signer/keys/trustroot", KindSigner, "%v", err)
		return rep, nil
	}
	rep.TrustRoot = root.Version

	// The signature, then the manifest it covers.
	m, st := verifyManifest(dir, root, rep)
	if m == nil {
		return rep, nil
	}
	rep.Site, rep.Created, rep.LogOrigin, rep.LogSize = m.Site, m.Created, st.LogOrigin, st.LogSize

	// Every file, re-hashed, and nothing else.
	listed := map[string]bool{ManifestFile: true, SignatureFile: true, CheckpointFile: true}
	for _, f := range m.Files {
		listed[f.Path] = true
		rep.Files++
		rep.Kinds[f.Kind]++
		full := filepath.Join(dir, filepath.FromSlash(f.Path))
		if fi, err := os.Lstat(full); err == nil && !fi.Mode().IsRegular() {
			rep.add(f.Path, f.Kind, "not a regular file (%s): a set holds regular files only", fi.Mode().Type())
			continue
		}
		d, n, err := hashFile(full)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			rep.add(f.Path, f.Kind, "missing from the set")
		case err != nil:
			rep.add(f.Path, f.Kind, "unreadable: %v", err)
		case d != f.SHA256 || n != f.Size:
			rep.add(f.Path, f.Kind, "modified: %s (%d bytes), the signed manifest says %s (%d bytes)", d, n, f.SHA256, f.Size)
		}
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if rel = filepath.ToSlash(rel); !listed[rel] {
			rep.add(rel, kindOf(rel), "not in the signed manifest")
		}
		return nil
	})

	// The log: the co-signed checkpoint, reproduced from the entries.
	leaves := verifyLog(dir, root, st, rep)

	rep.RowsChecked = -1
	if o.CatalogRows != nil && leaves != nil {
		verifyRows(dir, root, leaves, o.CatalogRows, rep)
	}

	// The blobs' plaintext, through the KEK, once their ciphertext is known
	// to be the backed-up one.
	rep.BlobsDecrypted = -1
	if o.Blobs != nil {
		n, problems, err := o.Blobs(filepath.Join(dir, "data", "publisher"))
		if err != nil {
			rep.add("data/publisher/blobs", KindBlob, "cannot decrypt the blobs with the KEK: %v", err)
		}
		rep.BlobsDecrypted = n
		for _, p := range problems {
			rep.addProblem(p)
		}
	}
	return rep, nil
}

// rootChain reads the trust-root versions the signer's state holds, oldest
// first.
func rootChain(dir string) ([][]byte, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "data", "signer", "keys", "trustroot", "v*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths) // zero-padded version numbers
	var out [][]byte
	for _, p := range paths {
		b, err := readBounded(p, trustroot.MaxSize)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

func verifyManifest(dir string, root *trustroot.Root, rep *Report) (*Manifest, *attest.Backup) {
	envBytes, err := readBounded(filepath.Join(dir, SignatureFile), MaxSignatureSize)
	if err != nil {
		rep.add(SignatureFile, "", "unreadable: %v: a set without a signature is not a backup", err)
		return nil, nil
	}
	env, err := attest.ParseEnvelope(envBytes)
	if err != nil {
		rep.add(SignatureFile, "", "%v", err)
		return nil, nil
	}
	keyID, err := env.Verify(root.Keys(attest.PurposeBackup), attest.PurposeBackup)
	if err != nil {
		rep.add(SignatureFile, "", "not signed by a backup key of trust root v%d: %v", root.Version, err)
		return nil, nil
	}
	rep.KeyID = keyID
	st, err := attest.ParseStatement(env.Payload)
	if err != nil {
		rep.add(SignatureFile, "", "%v", err)
		return nil, nil
	}
	b, err := st.Backup()
	if err != nil {
		rep.add(SignatureFile, "", "%v", err)
		return nil, nil
	}
	if err := root.CheckSignedAt(keyID, b.Created); err != nil {
		rep.add(SignatureFile, "", "%v", err)
		return nil, nil
	}
	rep.ManifestDigest = b.ManifestDigest
	mb, err := readBounded(filepath.Join(dir, ManifestFile), MaxManifestSize)
	if err != nil {
		rep.add(ManifestFile, "", "unreadable: %v", err)
		return nil, nil
	}
	if d := digest.Of(mb); d != b.ManifestDigest {
		rep.add(ManifestFile, "", "modified: %s, the signature covers %s", d, b.ManifestDigest)
		return nil, nil
	}
	m, err := ParseManifest(mb)
	if err != nil {
		rep.add(ManifestFile, "", "%v", err)
		return nil, nil
	}
	if len(m.Files) != b.Files || !m.Created.Equal(b.Created) {
		rep.add(ManifestFile, "", "lists %d files created %s, the signed statement says %d created %s", len(m.Files), m.Created, b.Files, b.Created)
		return nil, nil
	}
	return m, b
}

// verifyLog checks the log and returns its leaf hashes up to the
// checkpoint, or nil if it could not be reproduced.
func verifyLog(dir string, root *trustroot.Root, st *attest.Backup, rep *Report) [][]byte {
	signed, err := readBounded(filepath.Join(dir, CheckpointFile), MaxCheckpointSize)
	if err != nil {
		rep.add(CheckpointFile, "", "unreadable: %v", err)
		return nil
	}
	cp, err := openCheckpoint(signed, root)
	if err != nil {
		rep.add(CheckpointFile, "", "co-signed checkpoint does not verify with trust root v%d: %v", root.Version, err)
		return nil
	}
	if cp.Origin != st.LogOrigin || cp.Size != st.LogSize {
		rep.add(CheckpointFile, "", "checkpoint is %s at size %d, the signed statement says %s at %d", cp.Origin, cp.Size, st.LogOrigin, st.LogSize)
		return nil
	}
	logDir := filepath.Join(dir, "data", "catalog", "log")
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	var leaves [][]byte
	for idx := uint64(0); idx*layout.EntryBundleWidth < cp.Size; idx++ {
		want := min(cp.Size-idx*layout.EntryBundleWidth, layout.EntryBundleWidth)
		rel, bundle, err := readBundle(logDir, idx, want)
		if err != nil {
			rep.add(path.Join("data/catalog/log", layout.EntriesPath(idx, layout.PartialTileSize(0, idx, cp.Size))), KindLogEntries, "%v", err)
			return nil
		}
		hashes := make([][]byte, want)
		for i := range want {
			hashes[i] = rfc6962.DefaultHasher.HashLeaf(bundle.Entries[i])
			if err := cr.Append(hashes[i], nil); err != nil {
				rep.add(rel, KindLogEntries, "%v", err)
				return nil
			}
		}
		leaves = append(leaves, hashes...)
		if tileRel, p := checkTile(logDir, idx, hashes); p != "" {
			rep.add(tileRel, KindLogTile, "%s", p)
		}
	}
	got, err := cr.GetRootHash(nil)
	if err != nil {
		rep.add("data/catalog/log/tile/entries", KindLogEntries, "%v", err)
		return nil
	}
	if !bytes.Equal(got, cp.Hash) {
		rep.add("data/catalog/log/tile/entries", KindLogEntries, "the entries do not reproduce the co-signed checkpoint at size %d: root %x, checkpoint %x", cp.Size, got, cp.Hash)
		return nil
	}
	return leaves
}

// readBundle reads entry bundle idx with at least want entries: the full
// bundle if the log grew past it after the checkpoint, else a partial one.
func readBundle(logDir string, idx, want uint64) (string, *api.EntryBundle, error) {
	candidates := []string{layout.EntriesPath(idx, 0)}
	for p := uint8(layout.EntryBundleWidth - 1); uint64(p) >= want && p > 0; p-- {
		candidates = append(candidates, layout.EntriesPath(idx, p))
	}
	for _, c := range candidates {
		b, err := readBounded(filepath.Join(logDir, filepath.FromSlash(c)), 64<<20)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		rel := path.Join("data/catalog/log", c)
		if err != nil {
			return rel, nil, err
		}
		var eb api.EntryBundle
		if err := eb.UnmarshalText(b); err != nil {
			return rel, nil, fmt.Errorf("entry bundle: %v", err)
		}
		if uint64(len(eb.Entries)) < want {
			return rel, nil, fmt.Errorf("entry bundle has %d entries, the checkpoint needs %d", len(eb.Entries), want)
		}
		return rel, &eb, nil
	}
	return "", nil, fmt.Errorf("entry bundle %d with %d entries is missing", idx, want)
}

// checkTile compares the level-0 hash tile idx (the full one, or the
// partial one of exactly len(hashes)) with the leaf hashes; it returns the
// tile's path and a problem, or "" if the tile matches or is absent
// (Tessera writes tiles after bundles).
func checkTile(logDir string, idx uint64, hashes [][]byte) (string, string) {
	for _, p := range []uint8{0, uint8(len(hashes) % layout.TileWidth)} {
		c := layout.TilePath(0, idx, p)
		rel := path.Join("data/catalog/log", c)
		b, err := readBounded(filepath.Join(logDir, filepath.FromSlash(c)), 1<<20)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return rel, err.Error()
		}
		var t api.HashTile
		if err := t.UnmarshalText(b); err != nil {
			return rel, "hash tile: " + err.Error()
		}
		for i, h := range hashes {
			if i >= len(t.Nodes) {
				break
			}
			if !bytes.Equal(t.Nodes[i], h) {
				return rel, fmt.Sprintf("hash tile disagrees with the leaf hash of entry %d (the tile or its entry bundle was modified)", idx*layout.EntryBundleWidth+uint64(i))
			}
		}
		return "", ""
	}
	return "", ""
}

// verifyRows matches every logged catalog row against the (verified) log.
func verifyRows(dir string, root *trustroot.Root, leaves [][]byte, rows func(string, func(Row) error) error, rep *Report) {
	const db = "data/catalog/catalog.db"
	rep.RowsChecked = 0
	bad := func(r Row, format string, args ...any) {
		name := fmt.Sprintf("%s %d", r.Table, r.ID)
		if r.Table == "artifacts" {
			name = fmt.Sprintf("artifacts %s@%s", r.Name, r.Version)
		}
		rep.addProblem(Problem{Path: db, Kind: KindCatalog, Row: name, Problem: fmt.Sprintf(format, args...)})
	}
	keys := root.Keys(attest.PurposeArtifact)
	err := rows(filepath.Join(dir, filepath.FromSlash(db)), func(r Row) error {
		switch {
		case r.LogIndex == nil:
			bad(r, "not in the log")
			return nil
		case *r.LogIndex < 0:
			bad(r, "log index %d", *r.LogIndex)
			return nil
		case uint64(*r.LogIndex) >= uint64(len(leaves)):
			return nil // logged after the backed-up checkpoint
		}
		rep.RowsChecked++
		if !bytes.Equal(rfc6962.DefaultHasher.HashLeaf(r.Leaf), leaves[*r.LogIndex]) {
			bad(r, "its log entry differs from entry %d of the log", *r.LogIndex)
			return nil
		}
		if r.Table != "artifacts" {
			return nil
		}
		e, err := tlog.ParseEntry(r.Leaf)
		if err != nil {
			bad(r, "log entry: %v", err)
			return nil
		}
		if e.Subject.Name != r.Name || e.Subject.Version != r.Version || e.Subject.Digest != r.Digest {
			bad(r, "row says %s@%s %s, its log entry %s@%s %s", r.Name, r.Version, r.Digest, e.Subject.Name, e.Subject.Version, e.Subject.Digest)
			return nil
		}
		if d := digest.Of(r.Envelope); d != digest.Prefix+e.EnvelopeSHA256 {
			bad(r, "envelope %s differs from the one logged (sha256:%s)", d, e.EnvelopeSHA256)
			return nil
		}
		env, err := attest.ParseEnvelope(r.Envelope)
		if err == nil {
			_, err = env.Verify(keys, attest.PurposeArtifact)
		}
		if err != nil {
			bad(r, "envelope does not verify with an artifact key of trust root v%d: %v", root.Version, err)
			return nil
		}
		st, err := attest.ParseStatement(env.Payload)
		var a *attest.Artifact
		if err == nil {
			a, err = st.Artifact()
		}
		if err != nil || a.Digest != r.Digest || a.Name != r.Name || a.Version != r.Version {
			bad(r, "envelope's statement is not about %s@%s %s (%v)", r.Name, r.Version, r.Digest, err)
		}
		return nil
	})
	if err != nil {
		rep.add(db, KindCatalog, "cannot read the catalog's rows: %v", err)
	}
}
