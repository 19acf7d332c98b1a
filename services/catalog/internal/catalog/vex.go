package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/custody-dev/custody/libs/digest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/libs/vex"
)

// MaxVEXEntries bounds the vex.added entries ListVEX returns for one
// artifact; more are reported as truncated.
const MaxVEXEntries = 100

// VEXSubmission is an OpenVEX document a security identity submits about
// one artifact: by name and version, or by digest.
type VEXSubmission struct {
	Name, Version, Digest string
	Document              []byte
}

// vexDetails are the details of a vex.added entry (tlog.TypeVEXAdded).
type vexDetails struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
	// Document is the OpenVEX document as submitted (compacted by the
	// log's encoding).
	Document json.RawMessage `json:"document"`
}

// VEXAdded is a logged vex.added entry and the artifact it is about.
type VEXAdded struct {
	Event      *Event
	Artifact   Artifact
	Statements int
}

// AddVEX logs an OpenVEX document about a logged artifact and returns once
// a co-signed checkpoint covers the entry (decision 0096). actor must be
// allowed to write vex.added (tlog.MayEmit: security identities only),
// else ErrPermissionDenied before anything is read. The document must
// parse (libs/vex, ErrInvalid otherwise) and each statement must name the
// artifact's digest. The entry is the stored record: the indexer stores it
// with the other events, and ListVEX reads it back with its proof.
func (c *Catalog) AddVEX(ctx context.Context, actor string, s VEXSubmission) (*VEXAdded, error) {
	if err := c.authorize(ctx, actor, tlog.TypeVEXAdded); err != nil {
		return nil, err
	}
	a, err := c.vexArtifact(ctx, s.Name, s.Version, s.Digest)
	if err != nil {
		return nil, err
	}
	doc, err := vex.Parse(s.Document)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := doc.About(a.Digest); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	details, err := json.Marshal(vexDetails{Name: a.Name, Version: a.Version, Digest: a.Digest, Document: s.Document})
	if err != nil {
		return nil, fmt.Errorf("%w: encode details: %v", ErrInvalid, err)
	}
	ev, err := c.appendEvent(ctx, actor, tlog.TypeVEXAdded, a.Digest, details, true)
	if err != nil {
		return nil, err
	}
	c.logger.InfoContext(ctx, "VEX document logged", slog.String("artifact", a.Name+"@"+a.Version), slog.String("digest", a.Digest),
		slog.Int("statements", len(doc.Statements)), slog.String("by", actor), slog.Uint64("index", ev.Entry.Index))
	return &VEXAdded{Event: ev, Artifact: a, Statements: len(doc.Statements)}, nil
}

// ListVEX returns the logged vex.added entries about an artifact (by name
// and version, or digest), in log order, proved against the latest
// co-signed checkpoint and re-checked (ErrIntegrity if a stored entry does
// not verify), and whether there were more than MaxVEXEntries.
func (c *Catalog) ListVEX(ctx context.Context, name, version, dig string) ([]Entry, bool, error) {
	a, err := c.vexArtifact(ctx, name, version, dig)
	if err != nil {
		return nil, false, err
	}
	entries, err := c.store.EventsOfType(ctx, a.Digest, tlog.TypeVEXAdded, MaxVEXEntries+1)
	if err != nil {
		return nil, false, unavailable("list VEX entries", err)
	}
	truncated := len(entries) > MaxVEXEntries
	if truncated {
		entries = entries[:MaxVEXEntries]
	}
	if err := c.reprove(ctx, entries); err != nil {
		return nil, false, err
	}
	for i := range entries {
		if err := c.verifyEntry(&entries[i], a.Digest); err != nil {
			return nil, false, err
		}
	}
	return entries, truncated, nil
}

// vexArtifact resolves a logged artifact by name and version, or digest
// (the oldest logged artifact with it).
func (c *Catalog) vexArtifact(ctx context.Context, name, version, dig string) (Artifact, error) {
	switch {
	case dig != "" && name == "" && version == "":
		if !digest.Valid(dig) {
			return Artifact{}, fmt.Errorf("%w: digest %q: want sha256:<64 lowercase hex>", ErrInvalid, trunc(dig))
		}
		recs, err := c.store.LoggedArtifactsByDigest(ctx, dig)
		if err != nil {
			return Artifact{}, unavailable("look up artifact", err)
		}
		if len(recs) == 0 {
			return Artifact{}, fmt.Errorf("%w: no logged artifact has digest %s", ErrNotFound, dig)
		}
		return recs[0].Artifact, nil
	case dig == "" && ValidName(name) && ValidVersion(version):
		rec, err := c.store.Artifact(ctx, name, version)
		switch {
		case errors.Is(err, ErrNotFound):
			return Artifact{}, fmt.Errorf("%w: no artifact %s@%s", ErrNotFound, name, version)
		case err != nil:
			return Artifact{}, unavailable("look up artifact", err)
		case !rec.Entry.Logged():
			return Artifact{}, fmt.Errorf("%w: artifact %s@%s is still being recorded; retry shortly", ErrNotFound, name, version)
		}
		return rec.Artifact, nil
	default:
		return Artifact{}, fmt.Errorf("%w: give either a name and version, or a digest", ErrInvalid)
	}
}
