package postgres_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/store/postgres/pgtest"
)

// TestImportTwentyThousand imports 20,000 advisories of 2 KB in one
// transaction, as a large OSV export does, and reports the time
// (decision 0081 quotes it); every row is stored.
func TestImportTwentyThousand(t *testing.T) {
	s := open(t, pgtest.Database(t))
	var (
		advs []catalog.StoredAdvisory
		ids  []string
	)
	for i := range 20000 {
		id := fmt.Sprintf("GHSA-%d", i)
		advs = append(advs, catalog.StoredAdvisory{ID: id, Digest: "sha256:x", Document: make([]byte, 2000), Severity: "HIGH",
			Modified: time.Now(), SetDigest: "sha256:s", Packages: []catalog.AdvisoryPackage{{Ecosystem: "npm", Name: id}}})
		ids = append(ids, id)
	}
	start := time.Now()
	if _, err := s.ImportAdvisories(t.Context(), &catalog.AdvisoryImport{SetDigest: "sha256:s", Count: len(advs), CreatedAt: time.Now(), Leaf: []byte("x")}, advs); err != nil {
		t.Fatal(err)
	}
	t.Logf("20000 advisories stored in %v", time.Since(start).Round(time.Millisecond))
	got, err := s.AdvisoryDigests(t.Context(), ids)
	if err != nil || len(got) != len(ids) {
		t.Fatalf("%d of %d advisories stored: %v", len(got), len(ids), err)
	}
}
