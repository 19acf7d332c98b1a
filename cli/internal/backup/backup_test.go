package backup

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/digest"
)

func manifestJSON(t *testing.T, files ...File) []byte {
	t.Helper()
	b, err := json.Marshal(Manifest{Format: Format, Site: "t", Created: time.Unix(1, 0).UTC(), Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKinds(t *testing.T) {
	for p, want := range map[string]string{
		"data/publisher/blobs/objects/data/82/828a":      KindBlob,
		"data/publisher/blobs/objects/keys/sha256/6e/6e": KindWrappedKey,
		"data/publisher/bindings/x.json":                 KindBinding,
		"data/catalog/catalog.db":                        KindCatalog,
		"data/catalog/catalog.db-wal":                    KindCatalog,
		"data/catalog/catalog.db-shm":                    "",
		"data/catalog/log/tile/entries/000.p/2":          KindLogEntries,
		"data/catalog/log/tile/0/000.p/2":                KindLogTile,
		"data/catalog/log/tile/0/x001/x234/067":          KindLogTile,
		"data/catalog/log/tile/1/000.p/255":              KindLogTile,
		"data/catalog/log/tile/entries/x001/067":         KindLogEntries,
		// Tessera's temporary files: the final name and random digits.
		"data/catalog/log/tile/entries/000.p/41278168309": "",
		"data/catalog/log/tile/0/0001234567":              "",
		"data/catalog/log/tile/0/000.p/256":               "",
		"data/catalog/log/tile/0/000.p/0":                 "",
		"data/catalog/log/tile/0/000.p/07":                "",
		"data/catalog/log/tile/0/x01/000":                 "",
		"data/catalog/log/tile/entries/000.p/":            "",
		"data/catalog/log/checkpoint1845":                 "",
		"data/catalog/log/.state/treeState":               KindLogState,
		"data/catalog/log/.state/treeState98765":          "",
		"data/catalog/log/.state/gcState":                 KindLogState,
		"data/catalog/log/checkpoint":                     KindLogState,
		"data/catalog/log/.state/treeState.lock":          "",
		"data/signer/keys/trustroot/v00000001.json":       KindSigner,
		"trust/root.json":                                 KindTrustRoot,
		"keys/keystore.json":                              "", // keys never go into a backup
		"data/publisher/partial/upload":                   "",
		"data/edge/cache":                                 "",
	} {
		if got := kindOf(p); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", p, got, want)
		}
	}
}

// A hostile manifest cannot name files outside the set, files a backup
// never holds, a file twice, or a wrong kind.
func TestParseManifestRefuses(t *testing.T) {
	d := digest.Of([]byte("x"))
	good := File{Path: "trust/root.json", Kind: KindTrustRoot, Size: 1, SHA256: d}
	if _, err := ParseManifest(manifestJSON(t, good)); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	for name, b := range map[string][]byte{
		"traversal":     manifestJSON(t, File{Path: "data/signer/../../../etc/passwd", Kind: KindSigner, SHA256: d}),
		"absolute":      manifestJSON(t, File{Path: "/data/signer/x", Kind: KindSigner, SHA256: d}),
		"keys":          manifestJSON(t, File{Path: "keys/keystore.json", Kind: KindSigner, SHA256: d}),
		"unclean":       manifestJSON(t, File{Path: "data/signer//x", Kind: KindSigner, SHA256: d}),
		"twice":         manifestJSON(t, good, good),
		"wrong kind":    manifestJSON(t, File{Path: "trust/root.json", Kind: KindBlob, SHA256: d}),
		"bad digest":    manifestJSON(t, File{Path: "trust/root.json", Kind: KindTrustRoot, SHA256: "sha256:00"}),
		"negative size": manifestJSON(t, File{Path: "trust/root.json", Kind: KindTrustRoot, Size: -1, SHA256: d}),
		"no files":      manifestJSON(t),
		"other format":  []byte(strings.Replace(string(manifestJSON(t, good)), Format, "custody-backup/v0", 1)),
		"unknown field": []byte(strings.Replace(string(manifestJSON(t, good)), `"site"`, `"evil":1,"site"`, 1)),
		"trailing data": append(manifestJSON(t, good), []byte(" {}")...),
		"not json":      []byte("{"),
	} {
		if _, err := ParseManifest(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"format":"custody-backup/v1","site":"s","created":"2026-01-01T00:00:00Z","files":[{"path":"trust/root.json","kind":"trust-root","size":1,"sha256":"sha256:` + strings.Repeat("a", 64) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		for _, fl := range m.Files {
			if !validPath(fl.Path) || path.IsAbs(fl.Path) || fl.Path != path.Clean(fl.Path) || strings.HasPrefix(fl.Path, "../") || strings.HasPrefix(fl.Path, "keys/") {
				t.Fatalf("accepted path %q", fl.Path)
			}
		}
	})
}

func TestReportIsBounded(t *testing.T) {
	r := &Report{}
	for i := range 5000 {
		r.add("p", KindBlob, "problem %d", i)
	}
	if len(r.Problems) != MaxProblems+1 || !strings.Contains(r.Problems[MaxProblems].Problem, "more than") {
		t.Fatalf("%d problems kept", len(r.Problems))
	}
}
