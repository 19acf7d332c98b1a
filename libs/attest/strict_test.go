package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestStatementParsingIsStrict covers what the statement and predicate
// parsers let through before they shared one strict decoder: data after the
// statement, and predicate fields that encoding/json matched loosely or
// resolved to the last of two.
func TestStatementParsingIsStrict(t *testing.T) {
	stmt, err := NewProvenance(artifact())
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"trailing bracket": append(bytes.Clone(stmt), ']'),
		"trailing brace":   append(bytes.Clone(stmt), '}'),
	} {
		if _, err := ParseStatement(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: ParseStatement: %v, want ErrMalformed", name, err)
		}
	}
	for name, in := range map[string][]byte{
		"predicate field in other case": bytes.Replace(stmt, []byte(`"buildDefinition"`), []byte(`"BuildDefinition"`), 1),
		"unknown predicate field":       bytes.Replace(stmt, []byte(`"buildDefinition":{`), []byte(`"buildDefinition":{"extra":1,`), 1),
		"repeated predicate key":        bytes.Replace(stmt, []byte(`"buildDefinition":{`), []byte(`"buildDefinition":{"buildType":"x",`), 1),
	} {
		if bytes.Equal(in, stmt) {
			t.Fatalf("%s: the test did not change the statement", name)
		}
		st, err := ParseStatement(in)
		if err == nil {
			_, err = st.Artifact()
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestDecisionRefusesBadPolicyDigest(t *testing.T) {
	d := decision()
	stmt, err := NewVSA(d)
	if err != nil {
		t.Fatal(err)
	}
	_, h, _ := bytes.Cut([]byte(d.PolicyDigest), []byte(":"))
	bad := bytes.Replace(stmt, h, append(bytes.Clone(h[:63]), 'X'), 1)
	if bytes.Equal(bad, stmt) {
		t.Fatal("the test did not change the statement")
	}
	st, err := ParseStatement(bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Decision(); !errors.Is(err, ErrMalformed) {
		t.Errorf("upper-case policy digest: %v, want ErrMalformed", err)
	}
}

// TestMarshalStatementOnePass: the statement encoded in one pass is, byte
// for byte, the predicate encoded first and embedded as raw JSON (the
// encoding before decision 0117), whatever the predicate holds.
func TestMarshalStatementOnePass(t *testing.T) {
	type inner struct {
		Raw  json.RawMessage `json:"raw"`
		When time.Time       `json:"when"`
	}
	preds := []any{
		sbomJSON{Format: "cyclonedx", Document: "sha256:" + strings.Repeat("a", 64)},
		map[string]any{"html": "<a href=\"x\">&</a>", "sep": "\u2028\u2029", "bad": "\xff", "n": 1.5e300, "nil": nil, "list": []string{}},
		struct {
			In    inner    `json:"in"`
			Empty []string `json:"empty,omitempty"`
			Nil   []string `json:"nil"`
		}{In: inner{Raw: json.RawMessage(" { \"a\" : [ 1 , 2 ] } "), When: time.Date(2026, 12, 4, 13, 0, 0, 5, time.UTC)}},
	}
	for i, p := range preds {
		got, err := marshalStatement("app", strings.Repeat("b", 64), "https://example.test/p", p)
		if err != nil {
			t.Fatal(err)
		}
		pred, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(statementJSON{
			Type:          StatementType,
			Subject:       []Subject{{Name: "app", Digest: map[string]string{"sha256": strings.Repeat("b", 64)}}},
			PredicateType: "https://example.test/p",
			Predicate:     pred,
		})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("predicate %d:\n got %s\nwant %s", i, got, want)
		}
	}
}
