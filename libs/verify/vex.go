package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/custody-dev/custody/libs/quote"
	"github.com/custody-dev/custody/libs/strictjson"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/trustroot"
	"github.com/custody-dev/custody/libs/vex"
)

// vexEntryDetails are the details of a vex.added entry (decision 0096).
type vexEntryDetails struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Digest   string          `json:"digest"`
	Document json.RawMessage `json:"document"`
}

// VEX verifies the vex.added entries the catalog served about a, an
// artifact whose evidence Check has already verified, and returns their
// documents in the order given (the catalog's log order): each entry is
// included in a checkpoint co-signed by the log key root lists, is a
// vex.added entry about a's digest (logged for any name@version with it), was written by an
// identity that may write it (tlog.MayEmit in a's trust domain: a security
// identity), and holds an OpenVEX document (libs/vex) whose every
// statement names a's digest. One entry failing fails them all: a
// tampered VEX is never silently dropped, since dropping it could as well
// drop a later statement that takes a suppression back. Errors wrap
// ErrVerification and name the entry.
func VEX(entries []LogEntry, a Artifact, root *trustroot.Root) ([]vex.Entry, error) {
	if root == nil {
		return nil, fmt.Errorf("%w: VEX of %s@%s: no usable trust root", ErrVerification, a.Name, a.Version)
	}
	b, err := spiffeid.FromString(a.BuilderID)
	if err != nil {
		return nil, fmt.Errorf("%w: VEX of %s@%s: the artifact's builder %q is no SPIFFE ID, so its trust domain is unknown", ErrVerification, a.Name, a.Version, quote.Prefix(a.BuilderID))
	}
	out := make([]vex.Entry, 0, len(entries))
	for _, e := range entries {
		doc, actor, err := vexEntry(e, a, root, b.TrustDomain())
		if err != nil {
			return nil, fmt.Errorf("%w: VEX entry %d about %s@%s: %v", ErrVerification, e.Index, a.Name, a.Version, err)
		}
		sum := sha256.Sum256(e.Leaf)
		out = append(out, vex.Entry{Index: e.Index, Actor: actor, Document: doc, LeafSHA256: hex.EncodeToString(sum[:])})
	}
	return out, nil
}

func vexEntry(e LogEntry, a Artifact, root *trustroot.Root, td spiffeid.TrustDomain) (*vex.Document, string, error) {
	entry, _, err := Entry(e, root)
	if err != nil {
		return nil, "", fmt.Errorf("%s", strings.TrimPrefix(err.Error(), ErrVerification.Error()+": "))
	}
	if entry.Type != tlog.TypeVEXAdded {
		return nil, "", fmt.Errorf("type %q, want %s", quote.Prefix(entry.Type), tlog.TypeVEXAdded)
	}
	if entry.Subject.Digest != a.Digest {
		return nil, "", fmt.Errorf("about %s, not the artifact's digest %s", quoteDigest(entry.Subject.Digest), a.Digest)
	}
	id, err := spiffeid.FromString(entry.Actor)
	if err == nil {
		err = tlog.MayEmit(td, tlog.TypeVEXAdded, id)
	}
	if err != nil {
		return nil, "", fmt.Errorf("written by %s, which may not say what affects an artifact: %v", quote.Prefix(entry.Actor), err)
	}
	var d vexEntryDetails
	if err := strictjson.Decode(entry.Details, tlog.MaxEntrySize, &d); err != nil {
		return nil, "", fmt.Errorf("details: %v", err)
	}
	// The statements are about the bytes: an entry logged for another
	// name@version with the same digest applies too.
	if d.Digest != a.Digest {
		return nil, "", fmt.Errorf("details digest %s, not the artifact's", quoteDigest(d.Digest))
	}
	doc, err := vex.Parse(d.Document)
	if err != nil {
		return nil, "", err
	}
	if err := doc.About(a.Digest); err != nil {
		return nil, "", err
	}
	return doc, entry.Actor, nil
}
