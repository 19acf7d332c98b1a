package tlog_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/custody-dev/custody/libs/tlog"
)

const digest = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func sampleEntry() tlog.Entry {
	return tlog.Entry{
		Type:           tlog.TypeArtifactPublished,
		Time:           time.Date(2025, 3, 1, 12, 0, 0, 123, time.UTC),
		Actor:          "spiffe://custody.test/service/publisher",
		Subject:        tlog.Subject{Name: "app", Version: "1.0.0", Digest: digest},
		EnvelopeSHA256: strings.Repeat("ab", 32),
		Details:        json.RawMessage(`{"size": 42, "channel": "stable"}`),
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := sampleEntry()
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"artifact.published","time":"2025-03-01T12:00:00.000000123Z","actor":"spiffe://custody.test/service/publisher",` +
		`"subject":{"name":"app","version":"1.0.0","digest":"` + digest + `"},"envelope_sha256":"` + strings.Repeat("ab", 32) +
		`","details":{"size":42,"channel":"stable"}}`
	if diff := cmp.Diff(want, string(leaf)); diff != "" {
		t.Errorf("leaf (-want +got):\n%s", diff)
	}
	got, err := tlog.ParseEntry(leaf)
	if err != nil {
		t.Fatal(err)
	}
	e.Details = json.RawMessage(`{"size":42,"channel":"stable"}`)
	if diff := cmp.Diff(&e, got); diff != "" {
		t.Errorf("ParseEntry(Marshal(e)) (-want +got):\n%s", diff)
	}
}

func TestEntryMinimal(t *testing.T) {
	e := tlog.Entry{Type: "edge.purged", Time: time.Unix(1, 0).UTC(), Actor: "spiffe://custody.test/edge/dev"}
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"type":"edge.purged","time":"1970-01-01T00:00:01Z","actor":"spiffe://custody.test/edge/dev","subject":{}}`; string(leaf) != want {
		t.Errorf("leaf = %s, want %s", leaf, want)
	}
	if _, err := tlog.ParseEntry(leaf); err != nil {
		t.Errorf("ParseEntry: %v", err)
	}
}

func TestMarshalRejectsInvalid(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*tlog.Entry)
		want   string
	}{
		{"empty type", func(e *tlog.Entry) { e.Type = "" }, "type"},
		{"upper type", func(e *tlog.Entry) { e.Type = "Artifact.published" }, "type"},
		{"zero time", func(e *tlog.Entry) { e.Time = time.Time{} }, "time is missing"},
		{"actor", func(e *tlog.Entry) { e.Actor = "publisher" }, "actor"},
		{"digest", func(e *tlog.Entry) { e.Subject.Digest = "sha256:ABC" }, "subject digest"},
		{"envelope hash", func(e *tlog.Entry) { e.EnvelopeSHA256 = "xyz" }, "envelope_sha256"},
		{"details array", func(e *tlog.Entry) { e.Details = json.RawMessage(`[1]`) }, "details"},
		{"details invalid", func(e *tlog.Entry) { e.Details = json.RawMessage(`{`) }, "details"},
		{"too big", func(e *tlog.Entry) {
			e.Details = json.RawMessage(`{"x":"` + strings.Repeat("a", tlog.MaxEntrySize) + `"}`)
		}, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := sampleEntry()
			tt.modify(&e)
			_, err := e.Marshal()
			if !errors.Is(err, tlog.ErrMalformedEntry) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Marshal: got %v, want ErrMalformedEntry mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParseEntryIsStrict(t *testing.T) {
	good, err := sampleEntry().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	s := string(good)
	tests := []struct {
		name string
		leaf string
		want string
	}{
		{"unknown field", strings.Replace(s, `"type"`, `"extra":1,"type"`, 1), "unknown field"},
		{"case-folded field", strings.Replace(s, `"type"`, `"Type"`, 1), "Type"},
		{"unknown subject field", strings.Replace(s, `"name":"app"`, `"name":"app","tag":"x"`, 1), "tag"},
		{"case-folded subject field", strings.Replace(s, `"name":"app"`, `"NAME":"app"`, 1), "NAME"},
		{"duplicate field", strings.Replace(s, `"type":"artifact.published"`, `"type":"artifact.published","type":"artifact.revoked"`, 1), "duplicate key"},
		{"duplicate in details", strings.Replace(s, `"size":42`, `"size":42,"size":1`, 1), "duplicate key"},
		{"trailing data", s + `{}`, "after"},
		{"not an object", `[]`, "malformed"},
		{"details null", strings.Replace(s, `{"size":42,"channel":"stable"}`, `null`, 1), "details"},
		{"bad time", strings.Replace(s, `2025-03-01T12:00:00.000000123Z`, `yesterday`, 1), "time"},
		{"missing actor", strings.Replace(s, `"actor":"spiffe://custody.test/service/publisher",`, ``, 1), "actor"},
		{"invalid UTF-8", strings.Replace(s, `app`, "a\xffp", 1), "UTF-8"},
		{"oversized", `{"type":"a","details":{"x":"` + strings.Repeat("a", tlog.MaxEntrySize) + `"}}`, "more than"},
		{"empty", ``, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlog.ParseEntry([]byte(tt.leaf))
			if !errors.Is(err, tlog.ErrMalformedEntry) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseEntry: got %v, want ErrMalformedEntry mentioning %q", err, tt.want)
			}
		})
	}
}

func TestValidType(t *testing.T) {
	for typ, want := range map[string]bool{
		"artifact.published": true, "admission.decided": true, "key.rotated_v2": true, "x": true,
		"": false, ".a": false, "a.": false, "a..b": false, "A.b": false, "1a": false, "a b": false,
		strings.Repeat("a", 129): false,
	} {
		if got := tlog.ValidType(typ); got != want {
			t.Errorf("ValidType(%q) = %v, want %v", typ, got, want)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	good, err := sampleEntry().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"type":"a","time":"2025-01-01T00:00:00Z","actor":"spiffe://x/y","subject":{}}`))
	f.Add([]byte(`{"type":"a","type":"b"}`))
	f.Add([]byte(`{"details":{"a":[{"b":{}}]}}`))
	f.Fuzz(func(t *testing.T, leaf []byte) {
		e, err := tlog.ParseEntry(leaf)
		if err != nil {
			if !errors.Is(err, tlog.ErrMalformedEntry) {
				t.Fatalf("error %v does not wrap ErrMalformedEntry", err)
			}
			return
		}
		// Whatever parses must re-encode to a leaf that parses to the same entry.
		again, err := e.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed entry: %v", err)
		}
		e2, err := tlog.ParseEntry(again)
		if err != nil {
			t.Fatalf("ParseEntry(Marshal(ParseEntry(leaf))): %v", err)
		}
		if !e.Time.Equal(e2.Time) || e.Type != e2.Type || e.Actor != e2.Actor || e.Subject != e2.Subject || e.EnvelopeSHA256 != e2.EnvelopeSHA256 {
			t.Fatalf("round trip changed the entry: %+v vs %+v", e, e2)
		}
	})
}

func TestMarshalRejectsDuplicateDetailKeys(t *testing.T) {
	e := sampleEntry()
	e.Details = json.RawMessage(`{"a":1,"a":2}`)
	if _, err := e.Marshal(); !errors.Is(err, tlog.ErrMalformedEntry) || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("Marshal: got %v, want ErrMalformedEntry for a duplicate key", err)
	}
}

// FuzzMarshalParses checks Marshal's contract with arbitrary details and
// actor: a leaf Marshal returns always parses (the indexer refuses a log
// entry that does not), and Marshal refuses what would not.
func FuzzMarshalParses(f *testing.F) {
	f.Add([]byte(`{"a":1}`), "spiffe://x/y")
	f.Add([]byte(`{"a":1,"a":2}`), "spiffe://x/y")
	f.Add([]byte(`{"a":"\xff"}`), "spiffe://x/\xff")
	f.Add([]byte(strings.Repeat(`{"a":`, 63)+"1"+strings.Repeat("}", 63)), "spiffe://x/y")
	f.Add([]byte(strings.Repeat(`{"a":`, 64)+"1"+strings.Repeat("}", 64)), "spiffe://x/y")
	f.Fuzz(func(t *testing.T, details []byte, actor string) {
		e := sampleEntry()
		e.Details, e.Actor = details, actor
		leaf, err := e.Marshal()
		if err != nil {
			if !errors.Is(err, tlog.ErrMalformedEntry) {
				t.Fatalf("error %v does not wrap ErrMalformedEntry", err)
			}
			return
		}
		if _, err := tlog.ParseEntry(leaf); err != nil {
			t.Fatalf("Marshal returned a leaf that does not parse: %v\n%q", err, leaf)
		}
	})
}

// BenchmarkMarshal is the leaf of an admission decision, as the catalog
// builds one per appended event.
func BenchmarkMarshal(b *testing.B) {
	e := tlog.Entry{Type: "admission.decided", Time: time.Date(2026, 12, 3, 7, 0, 0, 123456789, time.UTC),
		Actor: "spiffe://custody.test/service/gatekeeper", Details: []byte(`{"decision_id":"123456","env":"prod","allow":true}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}
