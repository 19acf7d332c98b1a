// Package sqlquery builds the artifact search of the SQL metadata back ends
// from fixed SQL text and bound parameters, so that no caller-supplied byte
// ever becomes SQL.
package sqlquery

import (
	"strconv"
	"strings"

	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// ListedColumns are the columns a search returns, in the order of
// catalog.Listed's fields: id, the artifact's fields and created_at (as the
// back end stores it), the current key id, then when the current envelope
// was recorded: the current re-signature's created_at, or the artifact's
// when its own envelope is current. They read ListedFrom.
const ListedColumns = `a.id, a.name, a.version, a.digest, a.size, a.channel, a.builder_id, a.source_repo, a.source_commit, a.created_at, a.current_key_id, COALESCE(s.created_at, a.created_at)`

// ListedFrom is the FROM clause ListedColumns read: artifacts as a, and its
// current re-signature, if any, as s (a primary-key lookup per row; a
// signature is current only once logged, see SetLogged).
const ListedFrom = `artifacts a LEFT JOIN signatures s ON s.id = a.signature_id`

// Placeholder renders the n-th bound parameter (from 1): "?" for SQLite,
// "$n" for PostgreSQL.
type Placeholder func(n int) string

// Question is SQLite's placeholder.
func Question(int) string { return "?" }

// Dollar is PostgreSQL's placeholder.
func Dollar(n int) string { return "$" + strconv.Itoa(n) }

// Search returns the query and its arguments for catalog.Store's
// SearchArtifacts over tables artifacts (a) and deployments: logged
// artifacts matching every set field of q, with an ID above afterID, in ID
// order, at most limit. Each filter names a column with an index of the
// form (column, id), so a page is an index range scan.
func Search(q catalog.Query, afterID int64, limit int, ph Placeholder) (string, []any) {
	var (
		b    strings.Builder
		args []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return ph(len(args))
	}
	b.WriteString(`SELECT ` + ListedColumns + ` FROM ` + ListedFrom + ` WHERE a.checkpoint IS NOT NULL AND a.id > `)
	b.WriteString(arg(afterID))
	for _, f := range []struct{ column, value string }{
		{"a.name", q.Name}, {"a.version", q.Version}, {"a.digest", q.Digest},
		{"a.builder_id", q.BuilderID}, {"a.source_repo", q.SourceRepo}, {"a.source_commit", q.SourceCommit},
		{"a.channel", q.Channel}, {"a.current_key_id", q.KeyID},
	} {
		if f.value != "" {
			b.WriteString(" AND " + f.column + " = " + arg(f.value))
		}
	}
	if q.Environment != "" {
		b.WriteString(" AND EXISTS (SELECT 1 FROM deployments d WHERE d.artifact_id = a.id AND d.environment = " + arg(q.Environment) + ")")
	}
	b.WriteString(" ORDER BY a.id LIMIT " + arg(limit))
	return b.String(), args
}
