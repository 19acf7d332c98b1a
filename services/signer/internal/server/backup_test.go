package server_test

import (
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/custody-dev/custody/libs/attest"
	libdigest "github.com/custody-dev/custody/libs/digest"
	signerv1 "github.com/custody-dev/custody/libs/gen/custody/signer/v1"
	"github.com/custody-dev/custody/services/signer/internal/keys/soft"
	"github.com/custody-dev/custody/services/signer/internal/server"
)

func backupStatement(t *testing.T) []byte {
	t.Helper()
	b, err := attest.BackupStatement(attest.Backup{ManifestDigest: libdigest.Of([]byte("manifest")), Site: "test", Created: time.Now(),
		LogOrigin: "custody.test/log", LogSize: 3, Files: 9})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The backup key signs backup statements only, for admins and the backup
// identity only, and its envelope verifies with the published backup key,
// not as an artifact or a decision.
func TestSignBackupManifest(t *testing.T) {
	f := start(t)
	keys := publicKeys(t, f.client(t, "/auditor/audit"))
	for _, as := range []string{"/admin/alice", "/service/backup"} {
		resp, err := f.client(t, as).SignBackupManifest(t.Context(), &signerv1.SignBackupManifestRequest{Statement: backupStatement(t)})
		if err != nil {
			t.Fatalf("as %s: %v", as, err)
		}
		env, err := attest.ParseEnvelope(resp.GetEnvelope())
		if err != nil {
			t.Fatal(err)
		}
		if id, err := env.Verify(keys, attest.PurposeBackup); err != nil || id != resp.GetKeyId() {
			t.Errorf("as %s: backup envelope: %q %v", as, id, err)
		}
		if _, err := env.Verify(keys, attest.PurposeArtifact); err == nil {
			t.Errorf("as %s: the backup envelope verifies as an artifact signature", as)
		}
		if _, err := env.Verify(keys, attest.PurposeDecision); err == nil {
			t.Errorf("as %s: the backup envelope verifies as a decision", as)
		}
	}

	// Hostile callers: every other identity is denied, by name.
	for _, as := range []string{"/builder/ci", "/service/publisher", "/service/catalog", "/service/gatekeeper", "/deployer/prod", "/auditor/audit", "/edge/dev", "/approver/alice", "/service/backup2", "/admin"} {
		_, err := f.client(t, as).SignBackupManifest(t.Context(), &signerv1.SignBackupManifestRequest{Statement: backupStatement(t)})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "spiffe://custody.test"+as) {
			t.Errorf("as %s: %v, want PermissionDenied naming the caller", as, err)
		}
	}

	// An admin cannot use the backup key to sign anything but a backup
	// statement.
	admin := f.client(t, "/admin/alice")
	for name, st := range map[string][]byte{
		"provenance": provenance(t),
		"decision":   vsa(t),
		"not json":   []byte("{"),
		"empty":      nil,
		"huge":       []byte(`{"_type":"` + strings.Repeat("a", 2<<20) + `"}`),
	} {
		_, err := admin.SignBackupManifest(t.Context(), &signerv1.SignBackupManifestRequest{Statement: st})
		if c := status.Code(err); c != codes.InvalidArgument && !(name == "huge" && c == codes.ResourceExhausted) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// A signer started without --backup-key refuses to sign backups, and says
// how to fix it.
func TestSignBackupManifestWithoutBackupKey(t *testing.T) {
	store, err := soft.Open(filepath.Join(t.TempDir(), "keystore.json"), []byte("0123456789abcdef-passphrase"), true, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	names := server.Keys{Artifact: "artifact", Decision: "decision"}
	if err := server.EnsureKeys(t.Context(), store, names); err != nil {
		t.Fatal(err)
	}
	s := server.New(store, openLifecycle(t, store, names), slog.New(slog.DiscardHandler))
	_, err = s.SignBackupManifest(t.Context(), &signerv1.SignBackupManifestRequest{Statement: backupStatement(t)})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--backup-key") {
		t.Errorf("no backup key: %v, want FailedPrecondition naming --backup-key", err)
	}
}
