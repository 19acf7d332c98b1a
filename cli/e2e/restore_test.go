package e2e

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRestoreDrill runs docs/runbooks/restore.md on the dev stack: publish
// and sign, back up, find a tampered blob, log tile or catalog file named
// and the restore refused; restore the clean set into an empty site, start
// the stack on it, and fetch and verify the artifacts, with the restored log
// consistent with the checkpoint seen before the backup.
func TestRestoreDrill(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	names := []string{"app", "lib", "tool"}
	inputs := map[string]string{}
	digests := map[string]string{}
	for _, n := range names {
		inputs[n] = randomFile(t, work, n, 200<<10)
		digests[n] = digestOf(s.mustCustody("publish", inputs[n], "--name", n, "--version", "1.0.0", "--channel", "staging"))
	}
	// Stop the catalog cleanly (the supervisor restarts it): SQLite folds
	// its WAL into catalog.db, so the rows below are in the main file,
	// where a changed byte is read back (a WAL frame with a changed byte
	// fails its checksum and is ignored by SQLite).
	if err := syscall.Kill(s.info.PIDs["catalog"], syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A witness sees the log before the backup (once the catalog is back).
	witness := filepath.Join(work, "witness.json")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, code := s.custody("log", "verify", "--state", witness)
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the catalog did not come back: %s", out)
		}
	}

	set := filepath.Join(work, "set")
	var created struct {
		Files   int            `json:"files"`
		Kinds   map[string]int `json:"kinds"`
		LogSize uint64         `json:"log_size"`
	}
	if err := json.Unmarshal([]byte(s.mustCustody("backup", "create", set, "--json")), &created); err != nil {
		t.Fatal(err)
	}
	if created.Kinds["blob"] != 3 || created.Kinds["wrapped-key"] != 3 || created.Kinds["binding"] != 3 || created.Kinds["catalog"] < 1 || created.LogSize < 3 {
		t.Fatalf("backup set: %+v", created)
	}
	if out, code := s.custody("backup", "create", set); code == 0 || !strings.Contains(out, "immutable") {
		t.Fatalf("a second backup into the same set: exit %d\n%s", code, out)
	}
	// Only admins sign backups.
	if out, code := s.custody("backup", "create", filepath.Join(work, "by-builder"), "--as", "builder"); code == 0 || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("a builder created a backup: exit %d\n%s", code, out)
	}
	var clean struct {
		OK             bool `json:"ok"`
		BlobsDecrypted int  `json:"blobs_decrypted"`
		RowsChecked    int  `json:"catalog_rows_checked"`
	}
	if err := json.Unmarshal([]byte(s.mustCustody("backup", "verify", set, "--json")), &clean); err != nil || !clean.OK || clean.BlobsDecrypted != 3 || clean.RowsChecked < 3 {
		t.Fatalf("clean set: %+v %v", clean, err)
	}
	// With another KEK no blob decrypts, and each is named.
	otherKEK := filepath.Join(work, "other-kek.json")
	if b, err := exec.Command(filepath.Join(s.bin, "publisher"), "verify-blobs", "--data-dir", t.TempDir(), "--kek", "soft", "--soft-kek-file", otherKEK).CombinedOutput(); err != nil {
		t.Fatalf("make another KEK: %v\n%s", err, b)
	}
	out, code := s.custody("backup", "verify", set, "--soft-kek-file", otherKEK)
	if code != 1 || strings.Count(out, "does not decrypt with the KEK") != 3 {
		t.Fatalf("another KEK: exit %d, want 3 blobs named:\n%s", code, out)
	}

	// Tampering: each copy has one modified file, which verify names and
	// which makes restore refuse, writing nothing.
	blob := strings.TrimPrefix(s.ciphertextPath(t, digests["lib"]), s.dir+"/")
	var manifest struct {
		Files []struct{ Path, Kind string } `json:"files"`
	}
	mb, err := os.ReadFile(filepath.Join(set, "manifest.json"))
	if err != nil || json.Unmarshal(mb, &manifest) != nil {
		t.Fatalf("manifest: %v", err)
	}
	entries := ""
	for _, f := range manifest.Files {
		if f.Kind == "log-entries" {
			entries = f.Path
		}
	}
	for _, tc := range []struct{ name, path string }{
		{"blob", blob},
		{"log entry bundle", entries},
		{"catalog", "data/catalog/catalog.db"},
		{"manifest", "manifest.json"},
	} {
		bad := filepath.Join(work, "bad-"+strings.ReplaceAll(tc.name, " ", "-"))
		copyTree(t, set, bad)
		target := filepath.Join(bad, filepath.FromSlash(tc.path))
		if err := os.Chmod(target, 0o600); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		fi, _ := os.Stat(target)
		flipByte(t, target, fi.Size()/2)
		out, code := s.custody("backup", "verify", bad, "--json")
		if code != 1 || !strings.Contains(out, `"path": "`+tc.path+`"`) || !strings.Contains(out, `"ok": false`) {
			t.Fatalf("tampered %s: verify exit %d, want 1 naming %s:\n%s", tc.name, code, tc.path, out)
		}
		site := filepath.Join(work, "site-"+strings.ReplaceAll(tc.name, " ", "-"))
		out, code = s.custody("restore", bad, "--site", site)
		if code != 1 || !strings.Contains(out, "restore refused") || !strings.Contains(out, tc.path) {
			t.Fatalf("tampered %s: restore exit %d, want 1 refusing:\n%s", tc.name, code, out)
		}
		if _, err := os.Stat(site); !os.IsNotExist(err) {
			t.Fatalf("tampered %s: the refused restore wrote %s", tc.name, site)
		}
	}
	// A catalog row changed in place (the artifact's name in its logged
	// entry): the database file and the row are named.
	rowSet := filepath.Join(work, "bad-row")
	copyTree(t, set, rowSet)
	changed := 0
	for _, f := range []string{"catalog.db"} {
		p := filepath.Join(rowSet, "data", "catalog", f)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		n := bytes.Count(b, []byte(`"name":"lib","version":"1.0.0"`))
		b = bytes.ReplaceAll(b, []byte(`"name":"lib","version":"1.0.0"`), []byte(`"name":"lob","version":"1.0.0"`))
		os.Chmod(p, 0o600)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		changed += n
	}
	if changed == 0 {
		t.Fatal("no catalog row of lib@1.0.0 found to change")
	}
	out, code = s.custody("backup", "verify", rowSet, "--json")
	if code != 1 || !strings.Contains(out, `"row": "artifacts lib@1.0.0"`) {
		t.Fatalf("changed catalog row: exit %d, want the row named:\n%s", code, out)
	}
	if out, code := s.custody("restore", rowSet, "--site", filepath.Join(work, "site-row")); code != 1 || !strings.Contains(out, "artifacts lib@1.0.0") {
		t.Fatalf("changed catalog row: restore exit %d:\n%s", code, out)
	}

	// A file replaced by a symbolic link to the same bytes is named.
	linked := filepath.Join(work, "bad-symlink")
	copyTree(t, set, linked)
	same := filepath.Join(work, "same-bytes")
	copyTree(t, filepath.Join(set, "trust"), same)
	os.Remove(filepath.Join(linked, "trust", "root.json"))
	if err := os.Symlink(filepath.Join(same, "root.json"), filepath.Join(linked, "trust", "root.json")); err != nil {
		t.Fatal(err)
	}
	if out, code := s.custody("backup", "verify", linked); code != 1 || !strings.Contains(out, "trust/root.json (trust-root): not a regular file") {
		t.Fatalf("symlinked file: exit %d\n%s", code, out)
	}
	// An extra file slipped into the set is named too.
	extra := filepath.Join(work, "bad-extra")
	copyTree(t, set, extra)
	os.WriteFile(filepath.Join(extra, "data", "publisher", "bindings", "evil.json"), []byte("{}"), 0o600)
	if out, code := s.custody("backup", "verify", extra); code != 1 || !strings.Contains(out, "evil.json") || !strings.Contains(out, "not in the signed manifest") {
		t.Fatalf("extra file: exit %d\n%s", code, out)
	}

	// Restore the clean set into an empty site, with the dev keys (the
	// stand-in for Vault and the HSM, which a backup never carries).
	old := s.dir
	_ = s.up.Process.Signal(syscall.SIGTERM)
	<-s.exited
	restored := filepath.Join(t.TempDir(), "restored")
	out = s.mustCustody("restore", set, "--site", restored, "--keys-from", old)
	if !strings.Contains(out, "OK backup set") || !strings.Contains(out, "restored "+itoa(uint64(created.Files))+" files") {
		t.Fatalf("restore:\n%s", out)
	}
	if out, code := s.custody("restore", set, "--site", restored); code == 0 || !strings.Contains(out, "not empty") {
		t.Fatalf("restore into a non-empty site: exit %d\n%s", code, out)
	}

	r := startAt(t, s.bin, restored)
	for _, n := range names {
		got := filepath.Join(work, n+".out")
		bundle := filepath.Join(work, n+".bundle.json")
		r.mustCustody("admit", n+"@1.0.0", "--env", "staging")
		r.mustCustody("fetch", n+"@1.0.0", "--env", "staging", "-o", got, "--bundle", bundle)
		sameFile(t, inputs[n], got)
		r.mustCustody("verify", got, "--bundle", bundle)
	}
	out = r.mustCustody("log", "verify", "--state", witness)
	if !strings.Contains(out, "extends the checkpoint seen") {
		t.Fatalf("restored log vs the witness:\n%s", out)
	}
	// The restored site keeps working: a new artifact publishes and the
	// restored site can itself be backed up and verified.
	r.mustCustody("publish", randomFile(t, work, "after", 4<<10), "--name", "after", "--version", "1", "--channel", "staging")
	again := filepath.Join(work, "set-after-restore")
	r.mustCustody("backup", "create", again)
	r.mustCustody("backup", "verify", again)
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o400)
	})
	if err != nil {
		t.Fatal(err)
	}
}
