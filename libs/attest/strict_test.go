package attest

import (
	"bytes"
	"errors"
	"testing"
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
