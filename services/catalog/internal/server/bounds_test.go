package server_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
)

// TestGetArtifactHostileInput: names, versions and digests that no artifact
// can have are InvalidArgument (a name of a megabyte used to reach the store
// and come back whole in a NotFound), and errors quote only a prefix.
func TestGetArtifactHostileInput(t *testing.T) {
	e := newEnv(t)
	c := e.client(t, "/deployer/pipeline")
	huge := strings.Repeat("a", 1<<20)
	for name, req := range map[string]*catalogv1.GetArtifactRequest{
		"huge name":         {Name: huge, Version: "1"},
		"huge version":      {Name: "app", Version: huge},
		"control character": {Name: "app\n", Version: "1"},
		"huge digest":       {Digest: "sha256:" + huge},
		"upper-case digest": {Digest: "sha256:" + strings.Repeat("A", 64)},
	} {
		_, err := c.GetArtifact(t.Context(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
		if err != nil && len(status.Convert(err).Message()) > 400 {
			t.Errorf("%s: the error is %d bytes", name, len(status.Convert(err).Message()))
		}
	}
}
