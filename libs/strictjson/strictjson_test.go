package strictjson

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type inner struct {
	Name string `json:"name"`
	N    int    `json:"n,omitempty"`
}

type embedded struct {
	Extra string `json:"extra,omitempty"`
}

type doc struct {
	embedded
	Type    string            `json:"type"`
	Time    time.Time         `json:"time,omitzero"`
	Sub     *inner            `json:"sub,omitempty"`
	List    []inner           `json:"list,omitempty"`
	Map     map[string]inner  `json:"map,omitempty"`
	Details json.RawMessage   `json:"details,omitempty"`
	Any     any               `json:"any,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Skipped string            `json:"-"`
	Untag   string
}

func TestDecode(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)
	tests := []struct {
		name    string
		in      string
		want    *doc
		wantErr string
	}{
		{name: "valid", in: `{"type":"a","sub":{"name":"x"},"list":[{"name":"y","n":2}],"map":{"k":{"name":"z"}},"details":{"d":[1,2]},"extra":"e","Untag":"u"}`,
			want: &doc{Type: "a", Sub: &inner{Name: "x"}, List: []inner{{Name: "y", N: 2}}, Map: map[string]inner{"k": {Name: "z"}},
				Details: json.RawMessage(`{"d":[1,2]}`), embedded: embedded{Extra: "e"}, Untag: "u"}},
		{name: "white space around", in: " \n{\"type\":\"a\"}\n\t ", want: &doc{Type: "a"}},
		{name: "trailing object", in: `{"type":"a"}{}`, wantErr: "data after"},
		{name: "trailing brace", in: `{"type":"a"}}`, wantErr: "invalid character"},
		{name: "trailing bracket", in: `{"type":"a"}]`, wantErr: "invalid character"},
		{name: "trailing garbage", in: `{"type":"a"} x`, wantErr: "invalid character"},
		{name: "trailing value", in: `{"type":"a"} 1`, wantErr: "data after"},
		{name: "truncated", in: `{"type":"a"`, wantErr: "end of JSON"},
		{name: "empty", in: ``, wantErr: "no JSON value"},
		{name: "null", in: `null`, wantErr: "want a JSON object"},
		{name: "array at top", in: `[]`, wantErr: "want a JSON object"},
		{name: "unknown field", in: `{"type":"a","bogus":1}`, wantErr: `unknown field "bogus"`},
		{name: "field in other case", in: `{"Type":"a"}`, wantErr: `unknown field "Type"`},
		{name: "nested field in other case", in: `{"sub":{"NAME":"x"}}`, wantErr: `unknown field "NAME"`},
		{name: "unknown field in slice element", in: `{"list":[{"name":"x","no":1}]}`, wantErr: `unknown field "no"`},
		{name: "unknown field in map value", in: `{"map":{"k":{"no":1}}}`, wantErr: `unknown field "no"`},
		{name: "skipped field", in: `{"Skipped":"x"}`, wantErr: `unknown field "Skipped"`},
		{name: "duplicate key", in: `{"type":"a","type":"b"}`, wantErr: `duplicate key "type"`},
		{name: "duplicate key in raw message", in: `{"details":{"k":1,"k":2}}`, wantErr: `duplicate key "k"`},
		{name: "duplicate key in any", in: `{"any":[{"k":1,"k":2}]}`, wantErr: `duplicate key "k"`},
		{name: "duplicate key in map", in: `{"labels":{"k":"1","k":"2"}}`, wantErr: `duplicate key "k"`},
		{name: "same key in sibling objects", in: `{"list":[{"name":"a"},{"name":"b"}]}`, want: &doc{List: []inner{{Name: "a"}, {Name: "b"}}}},
		{name: "too deep", in: `{"any":` + deep + `}`, wantErr: "nested more than"},
		{name: "not UTF-8", in: "{\"type\":\"\xff\"}", wantErr: "not UTF-8"},
		{name: "wrong type", in: `{"type":1}`, wantErr: "cannot unmarshal"},
		{name: "bad time", in: `{"time":"yesterday"}`, wantErr: "parsing time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got doc
			err := Decode([]byte(tt.in), 1<<20, &got)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode(%s) error = %v, want ErrInvalid containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, &got, cmp.AllowUnexported(doc{})); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeSizeLimit(t *testing.T) {
	var d doc
	in := []byte(`{"type":"` + strings.Repeat("a", 100) + `"}`)
	if err := Decode(in, len(in), &d); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if err := Decode(in, len(in)-1, &d); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("over the limit: got %v", err)
	}
}

func TestDecodeErrorsQuoteOnlyAPrefix(t *testing.T) {
	long := strings.Repeat("A", 10000)
	for _, in := range []string{
		`{"` + long + `":1}`,
		`{"type":"a","type":"` + long + `"}`,
		`{"time":"` + long + `"}`,
		`{"type":"` + long + `"} trailing` + long,
	} {
		var d doc
		err := Decode([]byte(in), 1<<20, &d)
		if err == nil {
			t.Fatalf("Decode accepted %.40s…", in)
		}
		if len(err.Error()) > 250 {
			t.Errorf("error is %d bytes: %.300s", len(err.Error()), err)
		}
	}
}

func TestDecodeNeedsPointer(t *testing.T) {
	var d doc
	if err := Decode([]byte(`{}`), 10, d); !errors.Is(err, ErrInvalid) {
		t.Fatalf("non-pointer: got %v", err)
	}
}

func TestDecodeIntoMap(t *testing.T) {
	var m map[string]json.RawMessage
	if err := Decode([]byte(`{"a":1,"b":{"c":2}}`), 100, &m); err != nil || len(m) != 2 {
		t.Fatalf("got %v, %v", m, err)
	}
	if err := Decode([]byte(`{"a":1,"a":2}`), 100, &m); !errors.Is(err, ErrInvalid) {
		t.Fatalf("duplicate: got %v", err)
	}
}

// FuzzDecode checks that whatever Decode accepts, encoding/json reads the
// same way, and that Decode never panics.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"a","sub":{"name":"x","n":1},"list":[{"name":"y"}],"details":{"d":[1,{"e":null}]},"any":[true,1.5,"s"]}`,
		`{"type":"a"}}`, `{"type":"a","type":"b"}`, `{"Type":"a"}`, `{"labels":{"k":"v"}}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got doc
		if err := Decode(b, 1<<16, &got); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if len(err.Error()) > 250 {
				t.Fatalf("error is %d bytes", len(err.Error()))
			}
			return
		}
		var std doc
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("Decode accepted what encoding/json refuses: %v", err)
		}
		if diff := cmp.Diff(std, got, cmp.AllowUnexported(doc{})); diff != "" {
			t.Fatalf("Decode and encoding/json disagree (-std +strict):\n%s", diff)
		}
	})
}

// rawDoc takes any value at its one field: Check and Decode must agree on
// it. (Not on any: a number too large for a float64 is valid JSON that
// Decode cannot store.)
type rawDoc struct {
	Details json.RawMessage `json:"details"`
}

func FuzzCheckAgreesWithDecode(f *testing.F) {
	for _, s := range []string{
		`{"details":{"a":1}}`, `{"details":{"a":1,"a":2}}`, `{"details":[1,2]}`, `{"Details":{}}`, `{"details":{}} x`,
		`{"details":{}, "other":1}`, `{"details":"\ud800"}`, "{\"details\":\"\xff\"}", `[]`, `null`, ``, ` `,
		`{"details":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		errCheck, errDecode := Check(b, 1<<12, new(rawDoc)), Decode(b, 1<<12, new(rawDoc))
		if (errCheck == nil) != (errDecode == nil) || errCheck != nil && errCheck.Error() != errDecode.Error() {
			t.Fatalf("%q: Check says %v, Decode %v", b, errCheck, errDecode)
		}
	})
}

func TestCheckRefusesAsDecode(t *testing.T) {
	for _, s := range []string{`{"details":{"a":1,"a":2}}`, `{"Details":{}}`, `{"details":{}} x`, "{\"details\":\"\xff\"}", ``} {
		if err := Check([]byte(s), 1<<12, new(rawDoc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%q) = %v, want ErrInvalid", s, err)
		}
	}
	if err := Check([]byte(`{"details":{"a":[1,{"b":null}]}}`), 1<<12, new(rawDoc)); err != nil {
		t.Errorf("Check refused a valid document: %v", err)
	}
	if err := Check([]byte(`{"details":{}}`), 5, new(rawDoc)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Check over max = %v, want ErrInvalid", err)
	}
}
