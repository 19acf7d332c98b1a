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
	s.waitKeyRevokedPurge(t, revoked, cached, func(j purgeJob) bool {
		if j.Digest != digest || !j.Done {
			return false
		}
		if len(j.Targets) != len(devstack.EdgeServices) {
			t.Fatalf("job %+v: want every dev edge as a target", j)
		}
		return true
	})
	t.Logf("purged from every edge %v after the revocation", time.Since(revoked).Round(time.Millisecond))
}

// TestKeyRevocationPurgesAReSignedArtifact: two artifacts published by
// version 1 and re-signed by version 2 (custody keys resign), one before
// and one after version 2's revocation takes effect. The purge judges when
// the revoked version signed, not when the artifact was published: the one
// re-signed after the effective time is purged from the edge, the one
// re-signed before it is not.
func TestKeyRevocationPurgesAReSignedArtifact(t *testing.T) {
	s := start(t)
	work := t.TempDir()
	edge := devstack.Layout{Dir: s.dir}.DataDir("edge")
	publish := func(name string) (digest, cached string) {
		src := randomFile(t, work, name, 32<<10)
		digest = digestOf(s.mustCustody("publish", src, "--name", name, "--version", "1", "--channel", "staging"))
		s.mustCustody("fetch", name+"@1", "--env", "staging", "-o", filepath.Join(work, name+".out"))
		cached = filepath.Join(edge, "sha256-"+strings.TrimPrefix(digest, "sha256:"))
		if _, err := os.Stat(cached); err != nil {
			t.Fatalf("the edge did not cache %s: %v", name, err)
		}
		return digest, cached
	}
	earlyDigest, earlyCached := publish("early")
	lateDigest, lateCached := publish("late")
	if out := s.mustCustody("keys", "rotate", "artifact"); !strings.Contains(out, "version 2") {
		t.Fatalf("rotate:\n%s", out)
	}
	if out := s.mustCustody("keys", "resign", "--revoked-version", "1", "--artifact", "early@1"); !strings.Contains(out, "RESIGNED early@1") {
		t.Fatalf("resign early:\n%s", out)
	}
	time.Sleep(time.Second)
	effective := time.Now().UTC()
	time.Sleep(time.Second)
	if out := s.mustCustody("keys", "resign", "--revoked-version", "1", "--artifact", "late@1"); !strings.Contains(out, "RESIGNED late@1") {
		t.Fatalf("resign late:\n%s", out)
	}

	revoked := time.Now()
	s.mustCustody("keys", "revoke", "artifact", "--version", "2", "--effective", effective.Format(time.RFC3339Nano), "--reason", "e2e: purge a re-signature")
	s.waitKeyRevokedPurge(t, revoked, lateCached, func(j purgeJob) bool {
		switch j.Digest {
		case lateDigest:
			return j.Done
		case earlyDigest:
			t.Fatalf("job %+v: early@1 was re-signed before the effective time %v, want it not purged", j, effective)
		}
		return false
	})
	if _, err := os.Stat(earlyCached); err != nil {
		t.Errorf("early@1, re-signed before the effective time, left the edge's cache: %v", err)
	}
	t.Logf("late@1 purged from every edge %v after the revocation; early@1 kept", time.Since(revoked).Round(time.Millisecond))
}

// purgeJob is a job of `custody purge status --json`.
type purgeJob struct {
	jobOut
	Reason string `json:"reason"`
}

// waitKeyRevokedPurge polls `custody purge status` until one key-revoked
// job makes done report true and the blob's edge cache file cached is
// gone, and fails if that takes more than 10 s from since.
func (s *stack) waitKeyRevokedPurge(t *testing.T, since time.Time, cached string, done func(purgeJob) bool) {
	t.Helper()
	for {
		var out struct {
			Jobs []purgeJob `json:"jobs"`
		}
		mustJSON(t, s.mustCustody("purge", "status", "--json"), &out)
		ok := false
		for _, j := range out.Jobs {
			if j.Reason == "key-revoked" && done(j) {
				ok = true
			}
		}
		_, err := os.Stat(cached)
		if ok && os.IsNotExist(err) {
			return
		}
		if time.Since(since) > 10*time.Second {
			t.Fatalf("10 s after the revocation: job done %v, edge cache %v; jobs %+v", ok, err, out.Jobs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
