package tlog_test

import (
	"errors"
	"testing"
	"time"

	"github.com/custody-dev/custody/libs/tlog"
)

func TestCheckFresh(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *tlog.Checkpoint {
		return &tlog.Checkpoint{Origin: "o", Size: 3, CosignedAt: now.Add(d)}
	}
	tests := []struct {
		name   string
		cp     *tlog.Checkpoint
		maxAge time.Duration
		stale  bool
	}{
		{"just co-signed", at(0), time.Hour, false},
		{"at the limit", at(-time.Hour), time.Hour, false},
		{"older than the limit", at(-time.Hour - time.Second), time.Hour, true},
		{"a day old", at(-24 * time.Hour), time.Hour, true},
		{"small future skew", at(time.Minute), time.Hour, false},
		{"far future", at(time.Hour), time.Hour, true},
		{"no cosignature time", &tlog.Checkpoint{Origin: "o", Size: 3}, time.Hour, true},
		{"no limit: old", at(-1000 * time.Hour), 0, false},
		{"no limit: no time", &tlog.Checkpoint{Origin: "o"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tlog.CheckFresh(tt.cp, now, tt.maxAge)
			if got := errors.Is(err, tlog.ErrStale); got != tt.stale || (err != nil && !tt.stale) {
				t.Errorf("CheckFresh = %v, want stale %v", err, tt.stale)
			}
		})
	}
}

// TestCheckFreshCosigned ties it to OpenCosigned: the time it checks is the
// one in the verified cosignature/v1.
func TestCheckFreshCosigned(t *testing.T) {
	skey, _, err := tlog.GenerateKey("example.test/log")
	if err != nil {
		t.Fatal(err)
	}
	csk, cvk, err := tlog.GenerateCosignerKey("example.test/witness")
	if err != nil {
		t.Fatal(err)
	}
	signed, err := tlog.SignCheckpoint(tlog.Checkpoint{Origin: "example.test/log", Size: 1, Hash: make([]byte, 32)}, skey)
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := tlog.CosignCheckpoint(signed, csk)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := tlog.OpenCosigned(cosigned, "example.test/log", cvk)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.CheckFresh(cp, time.Now(), time.Minute); err != nil {
		t.Errorf("just co-signed: %v", err)
	}
	if err := tlog.CheckFresh(cp, time.Now().Add(2*time.Minute), time.Minute); !errors.Is(err, tlog.ErrStale) {
		t.Errorf("two minutes later with a one-minute limit: %v, want ErrStale", err)
	}
}
