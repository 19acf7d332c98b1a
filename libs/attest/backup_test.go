package attest

import (
	"errors"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/digest"
)

func TestBackupStatementRoundTrip(t *testing.T) {
	want := Backup{ManifestDigest: digest.Of([]byte("manifest")), Site: "dev", Created: time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC),
		LogOrigin: "custody.dev/log", LogSize: 7, Files: 12}
	b, err := BackupStatement(want)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseStatement(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Backup()
	if err != nil {
		t.Fatal(err)
	}
	if *got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := st.Artifact(); err == nil {
		t.Error("a backup statement parsed as provenance")
	}
}

func TestBackupStatementRefused(t *testing.T) {
	good := Backup{ManifestDigest: digest.Of([]byte("m")), Created: time.Now(), LogOrigin: "o", Files: 1}
	if _, err := BackupStatement(Backup{ManifestDigest: "sha256:XYZ"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad digest: %v", err)
	}
	for name, mod := range map[string]func(b *Backup){
		"no files":  func(b *Backup) { b.Files = 0 },
		"no origin": func(b *Backup) { b.LogOrigin = "" },
	} {
		b := good
		mod(&b)
		raw, err := BackupStatement(b)
		if err != nil {
			t.Fatal(err)
		}
		st, err := ParseStatement(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Backup(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzBackupStatement(f *testing.F) {
	b, _ := BackupStatement(Backup{ManifestDigest: digest.Of(nil), Created: time.Now(), LogOrigin: "o", Files: 1})
	f.Add(b)
	f.Fuzz(func(t *testing.T, raw []byte) {
		st, err := ParseStatement(raw)
		if err != nil {
			return
		}
		if got, err := st.Backup(); err == nil && !digest.Valid(got.ManifestDigest) {
			t.Fatalf("accepted digest %q", got.ManifestDigest)
		}
	})
}
