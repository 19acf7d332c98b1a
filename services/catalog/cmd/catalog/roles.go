package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/custody-dev/custody/libs/daemon"
	catalogv1 "github.com/custody-dev/custody/libs/gen/custody/catalog/v1"
	"github.com/custody-dev/custody/libs/rpc"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
	"github.com/custody-dev/custody/services/catalog/internal/server"
	"github.com/custody-dev/custody/services/catalog/internal/translog"
)

// advertiser is a shared store that records where the holder of a lease
// serves (PostgreSQL's leases table).
type advertiser interface {
	Advertise(ctx context.Context, key, addr string) error
	Advertised(ctx context.Context, key string) (string, error)
}

// roles runs a catalog process as the log writer, or as a follower that
// becomes the writer when it takes the lease (0070).
type roles struct {
	cfg      *config
	d        *daemon.Daemon
	store    store
	key      string
	cosigner translog.Cosigner

	mu      sync.Mutex
	closers []func(context.Context) error // run last first
	log     *translog.Log                 // set once this process writes the log
	writer  catalogv1.CatalogServiceClient
	conn    *grpc.ClientConn // to the writer at connAddr, as a follower
	connTo  string
}

func (r *roles) push(f func(context.Context) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closers = append(r.closers, f)
}

// close runs what push collected, last first, once the gRPC server has
// stopped.
func (r *roles) close(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ShutdownTimeout)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i](sctx))
	}
	r.closers = nil
	if r.conn != nil {
		r.conn.Close()
	}
	return errors.Join(errs...)
}

// becomeWriter opens the log (the caller holds the lease, or the store is
// not shared), finishes what an earlier writer left pending, and returns
// the server of the writer.
func (r *roles) becomeWriter(ctx context.Context, policy rpc.Policy) (catalogv1.CatalogServiceServer, error) {
	d := r.d
	lcfg, closeDriver, err := r.cfg.logConfig(ctx)
	if err != nil {
		return nil, err
	}
	r.push(func(context.Context) error { closeDriver(); return nil })
	lcfg.SignerKey, lcfg.Cosigner, lcfg.CosignWait, lcfg.CosignRefresh, lcfg.Logger = r.key, r.cosigner, r.cfg.CosignWait, r.cfg.CosignRefresh, d.Logger
	tl, err := translog.Open(ctx, lcfg)
	if err != nil {
		return nil, err
	}
	// The gRPC server has stopped: flush what was added, then stop.
	r.push(tl.Close)
	d.Logger.Info("transparency log open", slog.String("origin", tl.Origin()), slog.String("verifier_key", tl.VerifierKey()))

	// With PostgreSQL, the per-name@version lock is held in the database
	// as well, for every process that shares it (0047).
	locker, _ := r.store.(catalog.Locker)
	cat := catalog.New(catalog.Config{Store: r.store, Log: tl, VerifierKey: tl.VerifierKey(), TrustDomain: d.TrustDomain,
		Registerer: d.Telemetry.Registry, Logger: d.Logger, Prover: tl, Locker: locker})
	// Before the log and the store close: events sequenced but not yet
	// proved stay pending and are finished at the next start.
	r.push(func(context.Context) error { cat.Close(); return nil })
	if err := cat.Recover(ctx); errors.Is(err, translog.ErrNotCosigned) {
		// Serve anyway: reads work, and writes wait for the signer and
		// fail Unavailable until it is back. A record left pending is
		// finished by the client's retry or at the next start.
		d.Logger.Error("records left pending by an earlier run wait for the signer to co-sign the log", slog.Any("error", err))
	} else if err != nil {
		return nil, fmt.Errorf("finish records left pending by an earlier run: %w", err)
	}
	r.mu.Lock()
	r.log = tl
	r.mu.Unlock()
	return server.New(cat, d.Logger, d.Telemetry.Metrics, server.WithLedger(catalog.NewLedger(tl)),
		server.WithForwarding(d.ServiceID("catalog"), policy)), nil
}

// advertise records this process's gRPC address as the writer's, once it
// is bound; with --advertise-addr, that one.
func (r *roles) advertise(ctx context.Context) error {
	addr := r.cfg.AdvertiseAddr
	if addr == "" {
		bound, ok := r.d.Addr("grpc")
		if !ok {
			return errors.New("advertise the log writer: the gRPC listener is not bound")
		}
		addr = bound
	}
	if err := r.store.(advertiser).Advertise(ctx, logWriterLease, addr); err != nil {
		return fmt.Errorf("advertise the log writer's address: %w", err)
	}
	r.d.Logger.Info("log writer advertised", slog.String("addr", addr))
	return nil
}

// newFollower returns the follower's server: store reads from a catalog
// without a log, the rest forwarded to the advertised writer.
func (r *roles) newFollower(policy rpc.Policy, a advertiser) (catalogv1.CatalogServiceServer, error) {
	vkey, err := translog.VerifierKey(r.key)
	if err != nil {
		return nil, err
	}
	d := r.d
	cat := catalog.New(catalog.Config{Store: r.store, VerifierKey: vkey, TrustDomain: d.TrustDomain, Logger: d.Logger})
	local := server.New(cat, d.Logger, d.Telemetry.Metrics, server.WithForwarding(d.ServiceID("catalog"), policy))
	return server.NewFollower(local, func(ctx context.Context) (catalogv1.CatalogServiceClient, error) {
		return r.writerClient(ctx, a)
	}), nil
}

// writerClient returns a client of the writer advertised now, reusing the
// connection while the address stays the same.
func (r *roles) writerClient(ctx context.Context, a advertiser) (catalogv1.CatalogServiceClient, error) {
	addr, err := a.Advertised(ctx, logWriterLease)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil && r.connTo == addr {
		return r.writer, nil
	}
	// The writer must present the catalog's own SPIFFE ID.
	conn, err := r.d.Dial(addr, "catalog")
	if err != nil {
		return nil, fmt.Errorf("dial the log writer at %s: %w", addr, err)
	}
	if r.conn != nil {
		r.conn.Close()
	}
	r.conn, r.connTo, r.writer = conn, addr, catalogv1.NewCatalogServiceClient(conn)
	return r.writer, nil
}

// takeOver tries the lease every --lease-poll until it has it, then
// opens the log, serves as the writer and advertises itself.
func (r *roles) takeOver(ctx context.Context, l leaser, sw *server.Switch, policy rpc.Policy) error {
	t := time.NewTicker(r.cfg.LeasePoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		release, lost, held, err := l.WatchLease(ctx, logWriterLease, r.cfg.LeasePoll)
		if err != nil {
			r.d.Logger.Warn("try the log-writer lease; retrying", slog.Any("error", err))
			continue
		}
		if !held {
			continue
		}
		r.push(func(context.Context) error { release(); return nil })
		go r.stopOnLoss(lost)
		// A writer whose session PostgreSQL ended (restart, cut
		// connection) may still be running: it sees the loss within
		// 1.5 --lease-poll and stops at once (stopOnLoss). Wait longer
		// before opening the log.
		r.d.Logger.Info("took the log-writer lease: becoming the writer", slog.Duration("after", takeOverGrace*r.cfg.LeasePoll))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(takeOverGrace * r.cfg.LeasePoll):
		}
		w, err := r.becomeWriter(ctx, policy)
		if err != nil {
			return fmt.Errorf("become the log writer: %w", err)
		}
		sw.Set(w)
		return r.advertise(ctx)
	}
}

// takeOverGrace is how many --lease-poll a new writer waits after taking
// the lease before it opens the log: longer than a lost writer takes to
// notice (one interval, plus half of one for the check).
const takeOverGrace = 3

// exitNow ends the process without running deferred work.
var exitNow = func() { os.Exit(2) }

// stopOnLoss ends the process at once, as a crash, when the log-writer
// lease is lost: another catalog may take it and open the log, and two
// Tessera POSIX writers on one directory are unsafe (0047). Acknowledged
// entries are durably sequenced, so the next writer finishes them, as
// after a SIGKILL.
func (r *roles) stopOnLoss(lost <-chan error) {
	err, ok := <-lost
	if !ok {
		return
	}
	r.d.Logger.Error("lost the log-writer lease: stopping at once so that the next writer is the only one (0070)", slog.Any("error", err))
	exitNow()
}

// checkpoint returns the latest co-signed checkpoint: the log's own as the
// writer, the writer's as a follower.
func (r *roles) checkpoint(ctx context.Context) ([]byte, error) {
	r.mu.Lock()
	tl := r.log
	r.mu.Unlock()
	if tl != nil {
		b, _, err := tl.Checkpoint(ctx)
		return b, err
	}
	a, ok := r.store.(advertiser)
	if !ok {
		return nil, errors.New("no log writer")
	}
	c, err := r.writerClient(ctx, a)
	if err != nil {
		return nil, err
	}
	resp, err := c.GetCheckpoint(ctx, &catalogv1.GetCheckpointRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetCheckpoint(), nil
}
