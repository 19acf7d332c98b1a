package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/custody-dev/custody/libs/advisory"
	"github.com/custody-dev/custody/libs/tlog"
)

// Bounds of one import as the catalog holds it (decision 0081): the whole
// set is in memory until it is stored, one import at a time.
const (
	// MaxImportBytes bounds the documents of one import.
	MaxImportBytes = 256 << 20
	// MaxImportAdvisories bounds the advisories of one import.
	MaxImportAdvisories = advisory.MaxAdvisories
	// maxLoggedIDBytes bounds the ids an advisories.imported entry lists,
	// well inside tlog.MaxEntrySize.
	maxLoggedIDBytes = 32 << 10
)

// newImportMetrics returns custody_catalog_advisory_imports_total{result}
// (created: logged and stored; unchanged: the set was imported before) and
// custody_catalog_advisories_imported_total (advisories added or changed),
// registered on reg if it is not nil.
func newImportMetrics(reg prometheus.Registerer) (*prometheus.CounterVec, prometheus.Counter) {
	imports := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "custody_catalog_advisory_imports_total",
		Help: "Advisory imports, by result: created (logged and stored) or unchanged (the same set was imported before).",
	}, []string{"result"})
	for _, r := range []string{"created", "unchanged"} {
		imports.WithLabelValues(r)
	}
	imported := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "custody_catalog_advisories_imported_total",
		Help: "Advisories added or changed by imports.",
	})
	if reg != nil {
		reg.MustRegister(imports, imported)
	}
	return imports, imported
}

// ErrImportRunning means another import is in progress; retry once it is
// done.
var ErrImportRunning = fmt.Errorf("%w: another advisory import is in progress: retry when it is done", ErrUnavailable)

// StoredAdvisory is one advisory as the catalog keeps it.
type StoredAdvisory struct {
	ID string
	// Digest is the sha256 digest of Document, the OSV JSON as imported.
	Digest   string
	Document []byte
	// Severity is advisory.Severity's String (NONE … CRITICAL, UNKNOWN).
	Severity  string
	Withdrawn bool
	Modified  time.Time
	// SetDigest is the digest of the import that stored this document.
	SetDigest string
	// Packages are the packages the advisory names, by ecosystem (without
	// release) and name as libs/advisory compares them.
	Packages []AdvisoryPackage
}

// AdvisoryPackage is one package an advisory names.
type AdvisoryPackage struct {
	Ecosystem, Name string
}

// ComponentPackage is the package an SBOM component's purl names, as
// advisories name packages (libs/advisory.FromPURL: the OSV ecosystem and
// the name spelled as the ecosystem compares names, so "pkg:pypi/Jinja2"
// and "pkg:pypi/jinja2" are one package); ok is false for a purl of an
// ecosystem advisories are not matched in. The stores keep it beside each
// component, so that the artifacts an advisory affects are found by
// package whatever the spelling of their purls.
func ComponentPackage(purl string) (p AdvisoryPackage, ok bool) {
	ap, ok := advisory.FromPURL(purl)
	if !ok {
		return AdvisoryPackage{}, false
	}
	return AdvisoryPackage{Ecosystem: ap.Ecosystem, Name: ap.Name}, true
}

// AdvisoryImport is one stored import of a set of advisories.
type AdvisoryImport struct {
	ID int64
	// SetDigest is advisory.SetDigest of the set; unique.
	SetDigest string
	// Count is the set's size; Added, Updated and Unchanged split it by
	// what the import did to the stored advisories.
	Count, Added, Updated, Unchanged int
	// Actor is the importer's SPIFFE ID.
	Actor     string
	CreatedAt time.Time
	// LogIndex and Leaf are the import's advisories.imported entry.
	LogIndex uint64
	Leaf     []byte
}

// importDetails are the details of an advisories.imported entry.
type importDetails struct {
	Digest     string   `json:"digest"`
	Count      int      `json:"count"`
	Added      int      `json:"added"`
	Updated    int      `json:"updated"`
	Unchanged  int      `json:"unchanged"`
	IDs        []string `json:"ids"`
	IDsOmitted int      `json:"ids_omitted"`
}

// ImportAdvisories stores the OSV documents docs as one set and logs the
// import as one advisories.imported entry. actor must be allowed to write
// that type (tlog.MayEmit: security identities and admins), else
// ErrPermissionDenied. Every document is parsed with advisory.Parse; a
// malformed document, an id twice or a set over MaxImportAdvisories or
// MaxImportBytes fails with ErrInvalid and nothing is stored or logged.
//
// A set whose digest was imported before returns that import with created
// false and logs nothing. Otherwise the entry is sequenced first, then the
// advisories and the import are stored in one transaction; if storing fails
// after the entry was sequenced, it fails with ErrUnavailable and a retry
// logs the import again (imports are logged at least once). One import
// runs at a time: another fails with ErrImportRunning.
func (c *Catalog) ImportAdvisories(ctx context.Context, actor string, docs [][]byte) (imp *AdvisoryImport, created bool, err error) {
	if err := c.authorize(ctx, actor, tlog.TypeAdvisoriesImported); err != nil {
		return nil, false, err
	}
	if !c.importing.TryLock() {
		return nil, false, ErrImportRunning
	}
	defer c.importing.Unlock()
	rows, entries, err := parseSet(docs)
	if err != nil {
		return nil, false, err
	}
	set := advisory.SetDigest(entries)
	switch prev, err := c.store.AdvisoryImport(ctx, set); {
	case err == nil:
		c.imports.WithLabelValues("unchanged").Inc()
		return prev, false, nil
	case !errors.Is(err, ErrNotFound):
		return nil, false, unavailable("look up import", err)
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	stored, err := c.store.AdvisoryDigests(ctx, ids)
	if err != nil {
		return nil, false, unavailable("read stored advisories", err)
	}
	d := importDetails{Digest: set, Count: len(rows), IDs: []string{}}
	idBytes := 0
	for _, e := range entries {
		switch prev, ok := stored[e.ID]; {
		case !ok:
			d.Added++
		case prev != e.Digest:
			d.Updated++
		default:
			d.Unchanged++
			continue
		}
		if idBytes+len(e.ID)+3 > maxLoggedIDBytes {
			d.IDsOmitted++
			continue
		}
		idBytes += len(e.ID) + 3
		d.IDs = append(d.IDs, e.ID)
	}
	details, err := json.Marshal(d)
	if err != nil {
		return nil, false, fmt.Errorf("encode details: %w", err)
	}
	ev, err := c.appendEvent(ctx, actor, tlog.TypeAdvisoriesImported, set, details, false)
	if err != nil {
		return nil, false, err
	}
	imp = &AdvisoryImport{SetDigest: set, Count: d.Count, Added: d.Added, Updated: d.Updated, Unchanged: d.Unchanged,
		Actor: actor, CreatedAt: ev.CreatedAt, LogIndex: ev.Entry.Index, Leaf: ev.Entry.Leaf}
	for i := range rows {
		rows[i].SetDigest = set
	}
	imp.ID, err = c.store.ImportAdvisories(ctx, imp, rows)
	if errors.Is(err, ErrAlreadyExists) {
		// Imported meanwhile by another catalog process: that import stands.
		if prev, perr := c.store.AdvisoryImport(ctx, set); perr == nil {
			return prev, false, nil
		}
	}
	if err != nil {
		c.logger.WarnContext(ctx, "advisory import logged but not stored: a retry logs it again",
			slog.String("set_digest", set), slog.Uint64("index", ev.Entry.Index), slog.Any("error", err))
		return nil, false, unavailable("store advisories", err)
	}
	c.imports.WithLabelValues("created").Inc()
	c.imported.Add(float64(imp.Added + imp.Updated))
	return imp, true, nil
}

// parseSet parses docs, refusing an id twice and the set's bounds, and
// returns their rows (SetDigest unset) and entries in id order. Only the
// rows are kept: each decoded document is dropped once its row is made, and
// a row's Document is the caller's slice, not a copy, so the set costs
// about its bytes.
func parseSet(docs [][]byte) ([]StoredAdvisory, []advisory.Entry, error) {
	if len(docs) == 0 {
		return nil, nil, fmt.Errorf("%w: no advisories: send the documents of an OSV export", ErrInvalid)
	}
	if len(docs) > MaxImportAdvisories {
		return nil, nil, fmt.Errorf("%w: %d advisories, more than %d in one import", ErrInvalid, len(docs), MaxImportAdvisories)
	}
	total := 0
	rows := make([]StoredAdvisory, 0, len(docs))
	seen := make(map[string]bool, len(docs))
	for i, b := range docs {
		if total += len(b); total > MaxImportBytes {
			return nil, nil, fmt.Errorf("%w: the documents are more than %d bytes in all: import the set in parts", ErrInvalid, MaxImportBytes)
		}
		a, err := advisory.Parse(b)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: document %d: %v", ErrInvalid, i+1, err)
		}
		if seen[a.ID] {
			return nil, nil, fmt.Errorf("%w: advisory %s appears twice", ErrInvalid, a.ID)
		}
		seen[a.ID] = true
		r := storedOf(a, "")
		r.Document = b
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b StoredAdvisory) int { return strings.Compare(a.ID, b.ID) })
	entries := make([]advisory.Entry, len(rows))
	for i, r := range rows {
		entries[i] = advisory.Entry{ID: r.ID, Digest: r.Digest}
	}
	return rows, entries, nil
}

// storedOf is the row of a.
func storedOf(a *advisory.Advisory, set string) StoredAdvisory {
	s := StoredAdvisory{ID: a.ID, Digest: a.Digest, Document: a.Raw, Severity: a.Severity.String(), Withdrawn: a.Withdrawn,
		Modified: a.Modified.UTC(), SetDigest: set}
	for _, p := range a.Packages() {
		s.Packages = append(s.Packages, AdvisoryPackage{Ecosystem: p.Ecosystem, Name: p.Name})
	}
	return s
}

// Advisory returns the stored advisory id, or ErrNotFound.
func (c *Catalog) Advisory(ctx context.Context, id string) (*StoredAdvisory, error) {
	if !advisory.ValidID(id) {
		return nil, fmt.Errorf("%w: id %q: want an OSV id such as GHSA-jfh8-c2jp-5v3q", ErrInvalid, trunc(id))
	}
	a, err := c.store.Advisory(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("%w: no advisory %s: import it with custody advisories import", ErrNotFound, id)
	case err != nil:
		return nil, unavailable("read advisory", err)
	}
	return a, nil
}
