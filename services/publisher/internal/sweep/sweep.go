// Package sweep collects what interrupted work leaves in the store:
// ciphertext objects no record names (an upload stopped between writing
// its ciphertext and creating its record, or a deletion between removing
// the record and the ciphertext), blobs no binding names (an upload stopped
// between storing and binding), and temporary files of aborted writes.
//
// The object back ends keep no times, so an object is collected only when
// two sweeps at least the age threshold apart both find it unreferenced:
// an upload under way is never mistaken for an orphan. Temporary files are
// removed by their modification time.
package sweep

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/custody-dev/custody/services/publisher/internal/bindings"
)

// Blobs is what the sweeper needs from the encrypted store.
type Blobs interface {
	Inventory(ctx context.Context) (records map[string]string, data []string, damaged []string, err error)
	DestroyKey(ctx context.Context, digest string) error
	DeleteCiphertext(ctx context.Context, data string) error
}

// Excluder runs fn while no upload is binding (retention.Runner).
type Excluder interface {
	Exclusive(fn func() error) error
}

// Config is what New needs.
type Config struct {
	Blobs    Blobs
	Bindings *bindings.Store
	Exclude  Excluder
	// TempDirs hold temporary files of writes (local blob store, bindings);
	// files in them older than Age are removed.
	TempDirs []string
	Age      time.Duration
	Logger   *slog.Logger
	Now      func() time.Time // nil: time.Now
}

// Sweeper collects orphans. One goroutine at a time calls Sweep.
type Sweeper struct {
	c Config
	// seen is when each unreferenced record ("key:" digest) or
	// ciphertext object ("data:" name) was first found so.
	seen map[string]time.Time
}

// Result counts what one sweep removed.
type Result struct {
	Ciphertexts, Blobs, TempFiles int
	// Pending are orphans found but not yet old enough.
	Pending int
}

// New returns a sweeper.
func New(c Config) *Sweeper {
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Sweeper{c: c, seen: map[string]time.Time{}}
}

// Sweep collects once. A back end that fails stops the sweep; nothing is
// deleted that was not found unreferenced twice, Age apart, the second time
// with uploads' binding excluded.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	var res Result
	now := s.c.Now()
	for _, dir := range s.c.TempDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return res, fmt.Errorf("sweep %s: %w", dir, err)
		}
		for _, e := range ents {
			info, err := e.Info()
			if err != nil || !info.Mode().IsRegular() || now.Sub(info.ModTime()) < s.c.Age {
				continue
			}
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				res.TempFiles++
			}
		}
	}
	// The inventory is taken without holding up uploads; only the
	// deletions that are due exclude their bind step, and re-check the
	// bindings first.
	records, data, damaged, err := s.c.Blobs.Inventory(ctx)
	if err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	for _, d := range damaged {
		s.c.Logger.WarnContext(ctx, "sweep: damaged key record left in place", slog.String("record", d))
	}
	bound, err := s.bound()
	if err != nil {
		return res, err
	}
	named := map[string]bool{}
	orphans := map[string]bool{}
	for digest, obj := range records {
		named[obj] = true
		if !bound[digest] {
			orphans["key:"+digest] = true
		}
	}
	for _, obj := range data {
		if !named[obj] {
			orphans["data:"+obj] = true
		}
	}
	for k := range s.seen {
		if !orphans[k] {
			delete(s.seen, k) // referenced again, or gone
		}
	}
	var due []string
	for k := range orphans {
		first, ok := s.seen[k]
		if !ok {
			s.seen[k] = now
		}
		if !ok || now.Sub(first) < s.c.Age {
			res.Pending++
			continue
		}
		due = append(due, k)
	}
	if len(due) == 0 {
		return res, nil
	}
	err = s.c.Exclude.Exclusive(func() error {
		bound, err := s.bound()
		if err != nil {
			return err
		}
		for _, k := range due {
			switch kind, name := k[:len("key:")], k[len("key:"):]; kind {
			case "key:":
				if bound[name] {
					delete(s.seen, k) // an upload bound it meanwhile
					continue
				}
				// Key first, as retention does: the ciphertext is then
				// unreadable even if deleting it fails.
				if err := s.c.Blobs.DestroyKey(ctx, name); err != nil {
					return err
				}
				if err := s.c.Blobs.DeleteCiphertext(ctx, records[name]); err != nil {
					return err
				}
				res.Blobs++
				s.c.Logger.InfoContext(ctx, "sweep: unbound blob destroyed", slog.String("digest", name))
			default:
				name = k[len("data:"):]
				if err := s.c.Blobs.DeleteCiphertext(ctx, name); err != nil {
					return err
				}
				res.Ciphertexts++
				s.c.Logger.InfoContext(ctx, "sweep: orphaned ciphertext deleted", slog.String("object", name))
			}
			delete(s.seen, k)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("sweep: %w", err)
	}
	return res, nil
}

func (s *Sweeper) bound() (map[string]bool, error) {
	bound := map[string]bool{}
	err := s.c.Bindings.List(func(b bindings.Binding) error {
		if b.Deleted == nil {
			bound[b.Digest] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	return bound, nil
}

// Loop sweeps at once and then every interval until ctx is done; a failed
// sweep is logged and tried again at the next tick.
func (s *Sweeper) Loop(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Sweep(ctx)
		if err != nil {
			s.c.Logger.ErrorContext(ctx, "sweep", slog.Any("error", err))
		} else if res != (Result{}) {
			s.c.Logger.InfoContext(ctx, "sweep", slog.Int("ciphertexts", res.Ciphertexts), slog.Int("blobs", res.Blobs),
				slog.Int("temp_files", res.TempFiles), slog.Int("pending", res.Pending))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
