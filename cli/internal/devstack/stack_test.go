package devstack

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReservePortsDistinct: the ports planned for one start are distinct.
// A pick that closed each listener before the next let the kernel hand the
// same port to the signer and the catalog, and the catalog failed to bind.
func TestReservePortsDistinct(t *testing.T) {
	for i := 0; i < 5000; i++ {
		p, err := reservePorts("signer", "catalog", "cdn-broker")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for svc, addr := range p {
			if other, dup := seen[addr]; dup {
				t.Fatalf("pick %d: %s and %s both got %s", i, svc, other, addr)
			}
			seen[addr] = svc
		}
	}
}

// TestExitedErrMarksBindFailures: a service that exits because its planned
// port is taken is told apart from other start-up failures, so Up picks new
// ports instead of giving up.
func TestExitedErrMarksBindFailures(t *testing.T) {
	l := Layout{Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Dir(l.LogFile("catalog")), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(l.LogFile("catalog"), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("catalog: listen for grpc on 127.0.0.1:45605: listen tcp 127.0.0.1:45605: bind: address already in use\n")
	if err := exitedErr(l, "catalog", errors.New("exit status 1")); !errors.Is(err, errAddrInUse) {
		t.Fatalf("bind failure not marked: %v", err)
	}
	write("catalog: open the metadata store: permission denied\n")
	if err := exitedErr(l, "catalog", errors.New("exit status 1")); errors.Is(err, errAddrInUse) {
		t.Fatalf("other failure marked as a bind failure: %v", err)
	}
}
