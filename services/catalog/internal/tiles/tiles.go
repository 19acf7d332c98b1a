// Package tiles serves the catalog's transparency log read-only over HTTP in
// the C2SP tlog-tiles layout, with the co-signed checkpoint.
package tiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/transparency-dev/tessera/api/layout"
)

// Cache-Control values. Full tiles and entry bundles never change; a
// partial one is immutable too, but is deleted once its tile fills up, and
// the checkpoint moves forward with every publication.
const (
	CacheImmutable  = "public, max-age=31536000, immutable"
	CachePartial    = "public, max-age=60"
	CacheCheckpoint = "public, max-age=2, must-revalidate"
	cacheNone       = "no-store"
)

// maxResource bounds what is read from the log directory for one request:
// the largest entry bundle (256 entries of up to 2^16-1 bytes, each with a
// 2-byte length).
const maxResource = layout.EntryBundleWidth * (2 + 1<<16 - 1)

// Handler serves GET and HEAD of /checkpoint, /tile/<L>/<N>[.p/<W>] and
// /tile/entries/<N>[.p/<W>]. Tiles and entry bundles are read from Dir, a
// Tessera POSIX log, only at paths rebuilt from the parsed coordinates, so
// no request names any other file. Everything else is 404 (405 for other
// methods). It is safe for concurrent use.
type Handler struct {
	// Dir is the Tessera POSIX log directory.
	Dir string
	// Checkpoint returns the checkpoint to serve: the latest co-signed one.
	Checkpoint func(ctx context.Context) ([]byte, error)
	Logger     *slog.Logger
}

var _ http.Handler = (*Handler)(nil)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Strict-Transport-Security", "max-age=31536000")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Access-Control-Allow-Origin", "*")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: GET or HEAD", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.RawQuery != "" {
		notFound(w)
		return
	}
	if r.URL.Path == "/"+layout.CheckpointPath {
		h.serveCheckpoint(w, r)
		return
	}
	rel, partial, ok := Resource(r.URL.Path)
	if !ok {
		notFound(w)
		return
	}
	b, err := readBounded(filepath.Join(h.Dir, filepath.FromSlash(rel)))
	if errors.Is(err, fs.ErrNotExist) {
		notFound(w)
		return
	}
	if err != nil {
		h.logger().ErrorContext(r.Context(), "read log resource", slog.String("path", rel), slog.Any("error", err))
		hdr.Set("Cache-Control", cacheNone)
		http.Error(w, "log storage unavailable; retry later", http.StatusServiceUnavailable)
		return
	}
	if partial {
		hdr.Set("Cache-Control", CachePartial)
	} else {
		hdr.Set("Cache-Control", CacheImmutable)
	}
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}

func (h *Handler) serveCheckpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := h.Checkpoint(r.Context())
	if err != nil {
		h.logger().WarnContext(r.Context(), "no co-signed checkpoint to serve", slog.Any("error", err))
		w.Header().Set("Cache-Control", cacheNone)
		http.Error(w, "no co-signed checkpoint yet; retry later", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", CacheCheckpoint)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(cp)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(cp)
	}
}

// Resource maps a request path to the tlog-tiles resource it names: its
// path relative to the log root, and whether it is a partial tile or
// bundle. Only canonical paths are accepted: the path must be exactly the
// one layout.TilePath or layout.EntriesPath builds for its coordinates.
func Resource(path string) (rel string, partial bool, ok bool) {
	p, found := strings.CutPrefix(path, "/tile/")
	if !found || len(p) > 64 {
		return "", false, false
	}
	level, index, found := strings.Cut(p, "/")
	if !found {
		return "", false, false
	}
	if level == "entries" {
		i, w, err := layout.ParseTileIndexPartial(index)
		if err != nil {
			return "", false, false
		}
		rel = layout.EntriesPath(i, w)
		return rel, w > 0, "/"+rel == path
	}
	l, i, w, err := layout.ParseTileLevelIndexPartial(level, index)
	if err != nil {
		return "", false, false
	}
	rel = layout.TilePath(l, i, w)
	return rel, w > 0, "/"+rel == path
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fs.ErrNotExist
	}
	b, err := io.ReadAll(io.LimitReader(f, maxResource+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxResource {
		return nil, fmt.Errorf("%s is larger than any tile or entry bundle (%d bytes)", path, maxResource)
	}
	return b, nil
}

// notFound is not cached: a tile that does not exist yet will.
func notFound(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", cacheNone)
	http.Error(w, "not found", http.StatusNotFound)
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}
