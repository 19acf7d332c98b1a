package catalog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/attest"
	"github.com/custody-dev/custody/libs/tlog"
	"github.com/custody-dev/custody/services/catalog/internal/catalog"
)

// signer is the emitter of artifact.resigned: the identity the signer's
// ResignArtifact records re-signatures as.
const signer = "spiffe://custody.test/service/signer"

var (
	newKey   = strings.Repeat("b", 64)
	otherKey = strings.Repeat("c", 64)
)

// resigned is env signed again by keyID: the same payload, another
// signature.
func resigned(t *testing.T, env []byte, keyID string) []byte {
	t.Helper()
	e, err := attest.ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	b, err := attest.SignEnvelope(e.PayloadType, e.Payload, keyID, func([]byte) ([]byte, error) { return []byte("sig by " + keyID), nil })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorded records app@1.0.0 and returns it with its envelope.
func recorded(t *testing.T, c *catalog.Catalog) (catalog.Artifact, []byte) {
	t.Helper()
	a := artifact("1.0.0", "bytes")
	env := envelope(a)
	if _, _, err := c.RecordArtifact(t.Context(), publisher, a, env); err != nil {
		t.Fatal(err)
	}
	return a, env
}

// checkCurrent checks that app@1.0.0's current envelope is want, with a
// verifying artifact.resigned entry for it.
func checkCurrent(t *testing.T, f *fixture, c *catalog.Catalog, want []byte, keyID string) *tlog.Entry {
	t.Helper()
	rec, err := c.Artifact(t.Context(), "app", "1.0.0")
	if err != nil {
		t.Fatalf("Artifact: %v", err)
	}
	env, key, entry := rec.Current()
	if !bytes.Equal(env, want) || key != keyID {
		t.Fatalf("current envelope %s by %q, want %s by %q", env, key, want, keyID)
	}
	cp, err := tlog.OpenCheckpoint(entry.Checkpoint, f.vkey)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlog.VerifyInclusion(entry.Leaf, entry.Index, entry.Proof, cp); err != nil {
		t.Fatal(err)
	}
	e, err := tlog.ParseEntry(entry.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)
	if e.Type != tlog.TypeArtifactResigned || e.EnvelopeSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("current entry is %s for envelope %s, want %s for %x", e.Type, e.EnvelopeSHA256, tlog.TypeArtifactResigned, sum)
	}
	return e
}

func TestRecordSignature(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	a, env := recorded(t, c)
	next := resigned(t, env, newKey)
	rec, created, err := c.RecordSignature(t.Context(), signer, "app", "1.0.0", next)
	if err != nil || !created {
		t.Fatalf("RecordSignature: created=%v, %v", created, err)
	}
	if rec.Resigned == nil || string(rec.Envelope) != string(env) {
		t.Errorf("record: resigned %+v, recorded envelope %s", rec.Resigned, rec.Envelope)
	}
	e := checkCurrent(t, f, c, next, newKey)
	prev := sha256.Sum256(env)
	wantDetails := fmt.Sprintf(`{"previous_envelope_sha256":"%x","key_id":"%s","previous_key_id":"k"}`, prev, newKey)
	if e.Actor != signer || e.Subject != (tlog.Subject{Name: a.Name, Version: a.Version, Digest: a.Digest}) || string(e.Details) != wantDetails {
		t.Errorf("entry actor %s, subject %+v, details %s; want %s, the artifact, %s", e.Actor, e.Subject, e.Details, signer, wantDetails)
	}

	// Again: the same entry. Then by another key: details chain.
	again, created, err := c.RecordSignature(t.Context(), signer, "app", "1.0.0", next)
	if err != nil || created || again.Resigned.Entry.Index != rec.Resigned.Entry.Index {
		t.Errorf("same envelope again: created=%v, %v, index %d; want the existing entry %d", created, err, again.Resigned.Entry.Index, rec.Resigned.Entry.Index)
	}
	if got := f.size(t); got != 2 {
		t.Errorf("log size %d, want 2", got)
	}
	third := resigned(t, env, otherKey)
	if _, _, err := c.RecordSignature(t.Context(), signer, "app", "1.0.0", third); err != nil {
		t.Fatal(err)
	}
	e = checkCurrent(t, f, c, third, otherKey)
	prev = sha256.Sum256(next)
	if want := fmt.Sprintf(`{"previous_envelope_sha256":"%x","key_id":"%s","previous_key_id":"%s"}`, prev, otherKey, newKey); string(e.Details) != want {
		t.Errorf("details %s, want %s", e.Details, want)
	}
	// Back to an earlier envelope is a new re-signature.
	if _, created, err := c.RecordSignature(t.Context(), signer, "app", "1.0.0", next); err != nil || !created {
		t.Errorf("back to an earlier envelope: created=%v, %v", created, err)
	}
	checkCurrent(t, f, c, next, newKey)
	history, err := f.store.Signatures(t.Context(), rec.ID)
	if err != nil || len(history) != 3 {
		t.Fatalf("history: %d signatures, %v; want 3", len(history), err)
	}
	for i, want := range [][]byte{next, third, next} {
		if !bytes.Equal(history[i].Envelope, want) || !history[i].Entry.Logged() || history[i].Actor != signer {
			t.Errorf("history[%d] = %+v", i, history[i])
		}
	}
	// The recorded envelope is still what RecordArtifact retries return.
	pub, created, err := c.RecordArtifact(t.Context(), publisher, a, env)
	if err != nil || created || pub.Entry.Index != 0 || !bytes.Equal(pub.Envelope, env) {
		t.Errorf("RecordArtifact retry after re-signatures: created=%v, %v, index %d", created, err, pub.Entry.Index)
	}
	byDigest, err := c.ArtifactByDigest(t.Context(), a.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := byDigest.Current(); !bytes.Equal(got, next) {
		t.Error("ArtifactByDigest does not return the current envelope")
	}
}

func TestRecordSignatureRefuses(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	a, env := recorded(t, c)
	other := a
	other.Digest = artifact("1.0.0", "other bytes").Digest
	otherChannel := a
	otherChannel.Channel = "beta"
	e, _ := attest.ParseEnvelope(env)
	reencoded, _ := attest.SignEnvelope(attest.PayloadType, append(bytes.Clone(e.Payload), ' '), newKey, func([]byte) ([]byte, error) { return []byte("s"), nil })
	two := &attest.Envelope{PayloadType: e.PayloadType, Payload: e.Payload, Signatures: []attest.Signature{{KeyID: newKey, Sig: []byte("1")}, {KeyID: otherKey, Sig: []byte("2")}}}
	twoSigs, _ := two.Marshal()
	typ := &attest.Envelope{PayloadType: "application/json", Payload: e.Payload, Signatures: []attest.Signature{{KeyID: newKey, Sig: []byte("1")}}}
	otherType, _ := typ.Marshal()
	tests := []struct {
		name, version string
		envelope      []byte
		want          error
		mention       string
	}{
		{"unknown artifact", "9.9.9", resigned(t, env, newKey), catalog.ErrNotFound, "app@9.9.9"},
		{"other digest", "1.0.0", resigned(t, envelope(other), newKey), catalog.ErrInvalid, "digest"},
		{"other channel", "1.0.0", resigned(t, envelope(otherChannel), newKey), catalog.ErrInvalid, `channel "beta"`},
		{"other bytes, same fields", "1.0.0", reencoded, catalog.ErrInvalid, "statement bytes differ"},
		{"payload type", "1.0.0", otherType, catalog.ErrInvalid, "payloadType"},
		{"two signatures", "1.0.0", twoSigs, catalog.ErrInvalid, "2 signatures"},
		{"key id form", "1.0.0", resigned(t, env, "k2"), catalog.ErrInvalid, "keyid"},
		{"not an envelope", "1.0.0", []byte("{"), catalog.ErrInvalid, "envelope"},
		{"no envelope", "1.0.0", nil, catalog.ErrInvalid, "envelope is missing"},
		{"bad version", "1 0", resigned(t, env, newKey), catalog.ErrInvalid, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := c.RecordSignature(t.Context(), signer, "app", tt.version, tt.envelope)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("got %v, want %v mentioning %q", err, tt.want, tt.mention)
			}
		})
	}
	if got := f.size(t); got != 1 {
		t.Errorf("refused re-signatures reached the log: size %d", got)
	}
	// The recorded envelope is not a re-signature: nothing to do.
	if rec, created, err := c.RecordSignature(t.Context(), signer, "app", "1.0.0", env); err != nil || created || rec.Resigned != nil {
		t.Errorf("the recorded envelope: created=%v, %v", created, err)
	}
}

func TestRecordSignatureRecovers(t *testing.T) {
	tests := []struct {
		name         string
		store        func(catalog.Store) catalog.Store
		log          func(catalog.Log) catalog.Log
		appendedOnce bool
	}{
		{
			name:         "crash after append, before the database commit",
			store:        func(s catalog.Store) catalog.Store { return &faultyStore{Store: s, failSetLogged: true} },
			appendedOnce: true,
		},
		{
			name: "log refused the append",
			log:  func(l catalog.Log) catalog.Log { return &faultyLog{Log: l, mode: "refuse"} },
		},
		{
			name:         "appended, gave up waiting for the checkpoint",
			log:          func(l catalog.Log) catalog.Log { return &faultyLog{Log: l, mode: "unproved"} },
			appendedOnce: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, how := range []string{"recover at start", "client retries", "another re-signature"} {
				t.Run(how, func(t *testing.T) {
					f := newFixture(t)
					_, env := recorded(t, f.catalog(nil, nil))
					var s catalog.Store
					var l catalog.Log
					if tt.store != nil {
						s = tt.store(f.store)
					}
					if tt.log != nil {
						l = tt.log(f.log)
					}
					next := resigned(t, env, newKey)
					if _, _, err := f.catalog(s, l).RecordSignature(t.Context(), signer, "app", "1.0.0", next); !errors.Is(err, catalog.ErrUnavailable) {
						t.Fatalf("faulty RecordSignature: got %v, want ErrUnavailable", err)
					}
					want := uint64(1)
					if tt.appendedOnce {
						want = 2
					}
					if got := f.size(t); got != want {
						t.Fatalf("log size after the failure = %d, want %d", got, want)
					}
					// The envelope whose entry is not logged is not served.
					rec, err := f.catalog(nil, nil).Artifact(t.Context(), "app", "1.0.0")
					if err != nil {
						t.Fatal(err)
					}
					if got, _, _ := rec.Current(); !bytes.Equal(got, env) {
						t.Error("an envelope whose entry is not logged is current")
					}

					healthy := f.catalog(nil, nil)
					final, finalKey := next, newKey
					switch how {
					case "recover at start":
						if err := healthy.Recover(t.Context()); err != nil {
							t.Fatalf("Recover: %v", err)
						}
					case "client retries":
						if _, created, err := healthy.RecordSignature(t.Context(), signer, "app", "1.0.0", next); err != nil || !created {
							t.Fatalf("retry: created=%v, %v", created, err)
						}
					case "another re-signature":
						// The pending one is finished first, so it is in the
						// history, before the new one.
						final, finalKey = resigned(t, env, otherKey), otherKey
						if _, created, err := healthy.RecordSignature(t.Context(), signer, "app", "1.0.0", final); err != nil || !created {
							t.Fatalf("another: created=%v, %v", created, err)
						}
					}
					checkCurrent(t, f, healthy, final, finalKey)
					wantSize, wantHistory := uint64(2), 1
					if how == "another re-signature" {
						wantSize, wantHistory = 3, 2
					}
					if got := f.size(t); got != wantSize {
						t.Errorf("log size after recovery = %d, want %d", got, wantSize)
					}
					history, err := f.store.Signatures(t.Context(), rec.ID)
					if err != nil || len(history) != wantHistory || !bytes.Equal(history[0].Envelope, next) {
						t.Errorf("history after recovery: %d signatures, %v; want %d starting with the failed one", len(history), err, wantHistory)
					}
					if _, created, err := healthy.RecordSignature(t.Context(), signer, "app", "1.0.0", final); err != nil || created {
						t.Errorf("after recovery: created=%v, %v; want the existing entry", created, err)
					}
					if pending, err := f.store.Pending(t.Context()); err != nil || len(pending) != 0 {
						t.Errorf("pending rows after recovery: %v, %v", pending, err)
					}
				})
			}
		})
	}
}

func TestRecordSignatureOfPendingArtifact(t *testing.T) {
	f := newFixture(t)
	a := artifact("1.0.0", "a")
	env := envelope(a)
	if _, _, err := f.catalog(nil, &faultyLog{Log: f.log, mode: "refuse"}).RecordArtifact(t.Context(), publisher, a, env); !errors.Is(err, catalog.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	_, _, err := f.catalog(nil, nil).RecordSignature(t.Context(), signer, "app", "1.0.0", resigned(t, env, newKey))
	if !errors.Is(err, catalog.ErrNotFound) || !strings.Contains(err.Error(), "still being recorded") {
		t.Errorf("got %v, want ErrNotFound: still being recorded", err)
	}
}

func TestListArtifacts(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	for i := range 7 {
		a := artifact(fmt.Sprintf("1.0.%d", i), fmt.Sprint(i))
		env := envelope(a)
		if _, _, err := c.RecordArtifact(t.Context(), publisher, a, env); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if _, _, err := c.RecordSignature(t.Context(), signer, a.Name, a.Version, resigned(t, env, newKey)); err != nil {
				t.Fatal(err)
			}
		}
	}
	page := func(key string, size int) []string {
		var got []string
		token := ""
		for n := 0; ; n++ {
			list, next, err := c.ListArtifacts(t.Context(), key, size, token)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) > size && size > 0 {
				t.Errorf("page of %d, asked for %d", len(list), size)
			}
			for _, l := range list {
				got = append(got, l.Artifact.Version+" "+l.KeyID[:1])
			}
			if next == "" {
				return got
			}
			if n > 10 {
				t.Fatal("paging does not end")
			}
			token = next
		}
	}
	all := []string{"1.0.0 b", "1.0.1 k", "1.0.2 k", "1.0.3 b", "1.0.4 k", "1.0.5 k", "1.0.6 b"}
	for _, size := range []int{0, 1, 2, 3, 7, 8, 5000} {
		if diff := cmp.Diff(all, page("", size)); diff != "" {
			t.Errorf("page size %d (-want +got):\n%s", size, diff)
		}
	}
	if diff := cmp.Diff([]string{"1.0.0 b", "1.0.3 b", "1.0.6 b"}, page(newKey, 2)); diff != "" {
		t.Errorf("by key (-want +got):\n%s", diff)
	}
	if got := page(otherKey, 2); got != nil {
		t.Errorf("by an unknown key: %v", got)
	}
	for _, bad := range []struct {
		key, token string
		size       int
		mention    string
	}{
		{"", "", -1, "page_size"},
		{"", "junk", 0, "page_token"},
		{"", "AQ", 0, "page_token"},
		{"", strings.Repeat("A", 100), 0, "page_token"},
		{strings.Repeat("k", 300), "", 0, "signed_by_key_id"},
		{"k\n", "", 0, "signed_by_key_id"},
	} {
		if _, _, err := c.ListArtifacts(t.Context(), bad.key, bad.size, bad.token); !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), bad.mention) {
			t.Errorf("ListArtifacts(%q, %d, %q): got %v, want ErrInvalid mentioning %s", bad.key, bad.size, bad.token, err, bad.mention)
		}
	}
}

func TestAppendEventRefusesResignedType(t *testing.T) {
	f := newFixture(t)
	// Even its emitter logs it through RecordSignature only.
	_, err := f.catalog(nil, nil).AppendEvent(context.Background(), "spiffe://custody.test/service/signer", tlog.TypeArtifactResigned, "", nil)
	if !errors.Is(err, catalog.ErrInvalid) || !strings.Contains(err.Error(), "RecordSignature only") {
		t.Errorf("got %v, want ErrInvalid", err)
	}
	_, err = f.catalog(nil, nil).AppendEvent(context.Background(), publisher, tlog.TypeArtifactResigned, "", nil)
	if !errors.Is(err, catalog.ErrPermissionDenied) {
		t.Errorf("publisher: got %v, want ErrPermissionDenied", err)
	}
}

// TestRecordSignatureOnlyBySigner checks the catalog's own check, behind
// the gRPC policy: RecordSignature authorizes by tlog's event table, so a
// caller that is not the emitter of artifact.resigned is refused before
// anything is stored or logged, whatever policy put it in front.
func TestRecordSignatureOnlyBySigner(t *testing.T) {
	f := newFixture(t)
	c := f.catalog(nil, nil)
	_, env := recorded(t, c)
	next := resigned(t, env, newKey)
	for _, actor := range []string{
		"spiffe://custody.test/admin/ops", publisher, "spiffe://custody.test/edge/dev", "spiffe://custody.test/service/gatekeeper",
		"spiffe://other.test/service/signer", "spiffe://custody.test/service/signer/x", "not a spiffe id", "",
	} {
		_, _, err := c.RecordSignature(t.Context(), actor, "app", "1.0.0", next)
		if !errors.Is(err, catalog.ErrPermissionDenied) {
			t.Errorf("RecordSignature as %q: got %v, want ErrPermissionDenied", actor, err)
		}
	}
	rec, err := c.Artifact(t.Context(), "app", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if cur, _, _ := rec.Current(); !bytes.Equal(cur, env) || rec.Resigned != nil {
		t.Errorf("after refusals the current envelope is %s, want the published one", cur)
	}
	if n, err := f.log.Size(t.Context()); err != nil || n != 1 {
		t.Errorf("log size %d, %v after refusals; want 1 (the publication)", n, err)
	}
}
