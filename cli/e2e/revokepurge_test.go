package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custody-dev/custody/cli/internal/devstack"
)

// TestKeyRevocationPurgesTheEdges: revoking the key version that signed an
// artifact has the signer ask the broker (reason key-revoked) to purge it,
// and the broker drops it from every dev edge's cache within seconds, with
// no admin purge.
func TestKeyRevocationPurgesTheEdges(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	src := randomFile(t, work, "revoked", 64<<10)
	digest := digestOf(s.mustCustody("publish", src, "--name", "revoked", "--version", "1", "--channel", "staging"))
	s.mustCustody("fetch", "revoked@1", "--env", "staging", "-o", filepath.Join(work, "out"))
	cached := filepath.Join(devstack.Layout{Dir: s.dir}.DataDir("edge"), "sha256-"+strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Stat(cached); err != nil {
		t.Fatalf("the edge did not cache the fetched blob: %v", err)
	}

	revoked := time.Now()
	s.mustCustody("keys", "revoke", "artifact", "--version", "1", "--effective", "1h", "--reason", "e2e: purge on revocation")
	var out struct {
		Jobs []struct {
			jobOut
			Reason string `json:"reason"`
		} `json:"jobs"`
	}
	for {
		mustJSON(t, s.mustCustody("purge", "status", "--json"), &out)
		done := false
		for _, j := range out.Jobs {
			if j.Digest == digest && j.Reason == "key-revoked" && j.Done {
				if len(j.Targets) != len(devstack.EdgeServices) {
					t.Fatalf("job %+v: want every dev edge as a target", j)
				}
				done = true
			}
		}
		_, err := os.Stat(cached)
		if done && os.IsNotExist(err) {
			break
		}
		if time.Since(revoked) > 10*time.Second {
			t.Fatalf("10 s after the revocation: job done %v, edge cache %v; jobs %+v", done, err, out.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("purged from every edge %v after the revocation", time.Since(revoked).Round(time.Millisecond))
}
