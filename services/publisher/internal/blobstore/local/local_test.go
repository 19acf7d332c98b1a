package local_test

import (
	"testing"

	"github.com/custody-dev/custody/services/publisher/internal/blobstore"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/blobstoretest"
	"github.com/custody-dev/custody/services/publisher/internal/blobstore/local"
)

func TestConformance(t *testing.T) {
	blobstoretest.Run(t, func(t *testing.T) blobstore.Backend {
		s, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}
