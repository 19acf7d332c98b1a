package advisory_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custody-dev/custody/libs/advisory"
)

// zipOf builds a zip of the given files, each deflated unless its name
// ends in "#stored".
func zipOf(t testing.TB, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, f := range files {
		name, method := f[0], zip.Deflate
		if n, ok := strings.CutSuffix(name, "#stored"); ok {
			name, method = n, zip.Store
		}
		fw, err := w.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write([]byte(f[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testdataFiles(t testing.TB) [][2]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "osv", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	var out [][2]string
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]string{filepath.Base(p), string(b)})
	}
	return out
}

func readZip(b []byte) ([]advisory.Entry, error) {
	var got []advisory.Entry
	err := advisory.ReadZip(bytes.NewReader(b), int64(len(b)), func(a *advisory.Advisory) error {
		got = append(got, advisory.Entry{ID: a.ID, Digest: a.Digest})
		return nil
	})
	return got, err
}

func TestReadDirAndZipAgree(t *testing.T) {
	var fromDir []advisory.Entry
	if err := advisory.Read(filepath.Join("testdata", "osv"), func(a *advisory.Advisory) error {
		fromDir = append(fromDir, advisory.Entry{ID: a.ID, Digest: a.Digest})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	files := testdataFiles(t)
	if len(fromDir) != len(files) {
		t.Fatalf("read %d advisories from the directory, want %d", len(fromDir), len(files))
	}
	// The same documents in another order and compression: the same set.
	rev := make([][2]string, len(files))
	for i, f := range files {
		rev[len(files)-1-i] = [2]string{f[0] + "#stored", f[1]}
	}
	p := filepath.Join(t.TempDir(), "all.zip")
	if err := os.WriteFile(p, zipOf(t, rev), 0o600); err != nil {
		t.Fatal(err)
	}
	var fromZip []advisory.Entry
	if err := advisory.Read(p, func(a *advisory.Advisory) error {
		fromZip = append(fromZip, advisory.Entry{ID: a.ID, Digest: a.Digest})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if d, z := advisory.SetDigest(fromDir), advisory.SetDigest(fromZip); d != z || !strings.HasPrefix(d, "sha256:") {
		t.Fatalf("set digests differ: directory %s, zip %s", d, z)
	}
	// One changed byte changes the set's digest.
	files[0][1] = strings.Replace(files[0][1], `"id"`, ` "id"`, 1)
	changed, err := readZip(zipOf(t, files))
	if err != nil {
		t.Fatal(err)
	}
	if advisory.SetDigest(changed) == advisory.SetDigest(fromDir) {
		t.Fatal("a changed document left the set's digest as it was")
	}
}

const minimal = `{"id":"%s","modified":"2024-01-01T00:00:00Z"}`

func TestReadRefuses(t *testing.T) {
	bomb := `{"id":"BOMB-1","modified":"2024-01-01T00:00:00Z","details":"` + strings.Repeat("A", 1<<20) + `"}`
	big := `{"id":"BIG-1","modified":"2024-01-01T00:00:00Z","details":"` + strings.Repeat("A", advisory.MaxDocBytes) + `"}`
	for _, tt := range []struct {
		name  string
		files [][2]string
		want  string
	}{
		{"a name that is not the id", [][2]string{{"GHSA-1.json", fmt.Sprintf(minimal, "GHSA-2")}}, "holds advisory GHSA-2"},
		{"a nested path", [][2]string{{"npm/GHSA-1.json", fmt.Sprintf(minimal, "GHSA-1")}}, "is not <OSV id>.json"},
		{"a file that is not json", [][2]string{{"README.md", "hello"}}, "is not <OSV id>.json"},
		{"a traversal", [][2]string{{"../GHSA-1.json", fmt.Sprintf(minimal, "GHSA-1")}}, "is not <OSV id>.json"},
		{"an id twice", [][2]string{{"GHSA-1.json", fmt.Sprintf(minimal, "GHSA-1")}, {"GHSA-1.json#stored", fmt.Sprintf(minimal, "GHSA-1")}}, "appears twice"},
		{"a zip bomb", [][2]string{{"BOMB-1.json", bomb}}, "zip bomb"},
		{"a document over the bound", [][2]string{{"BIG-1.json#stored", big}}, "more than 2097152"},
		{"no id", [][2]string{{"X-1.json", `{"modified":"2024-01-01T00:00:00Z"}`}}, "is not an OSV id"},
		{"no modified time", [][2]string{{"X-1.json", `{"id":"X-1"}`}}, "no modified time"},
		{"not json", [][2]string{{"X-1.json", `{"id":`}}, "not an OSV document"},
		{"a wrong field type", [][2]string{{"X-1.json", `{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":{}}`}}, "not an OSV document"},
		{"a long version", [][2]string{{"X-1.json", `{"id":"X-1","modified":"2024-01-01T00:00:00Z","affected":[{"versions":["` + strings.Repeat("1", 300) + `"]}]}`}}, "longer than 256"},
		{"deep nesting", [][2]string{{"X-1.json", `{"id":"X-1","modified":"2024-01-01T00:00:00Z","database_specific":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat(`}`, 100) + `}`}}, "not an OSV document"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := readZip(zipOf(t, tt.files))
			if !errors.Is(err, advisory.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrInvalid saying %q", err, tt.want)
			}
		})
	}
	if _, err := readZip([]byte("PK not a zip")); !errors.Is(err, advisory.ErrInvalid) {
		t.Errorf("not a zip: err = %v, want ErrInvalid", err)
	}
}

func TestReadDirRefusesSymlinks(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	target := filepath.Join(outside, "GHSA-1.json")
	if err := os.WriteFile(target, fmt.Appendf(nil, minimal, "GHSA-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "GHSA-1.json")); err != nil {
		t.Fatal(err)
	}
	err := advisory.ReadDir(dir, func(*advisory.Advisory) error { return nil })
	if !errors.Is(err, advisory.ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid for a symbolic link", err)
	}
}

func TestReadStopsAtCallbackError(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	err := advisory.Read(filepath.Join("testdata", "osv"), func(*advisory.Advisory) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("err = %v after %d calls, want the callback's error after 1", err, n)
	}
}

func TestCountBound(t *testing.T) {
	advisory.SetMaxAdvisories(t, 3)
	dir := t.TempDir()
	var files [][2]string
	for i := range 4 {
		id := fmt.Sprintf("X-%d", i)
		files = append(files, [2]string{id + ".json", fmt.Sprintf(minimal, id)})
		if err := os.WriteFile(filepath.Join(dir, id+".json"), fmt.Appendf(nil, minimal, id), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	err := advisory.ReadDir(dir, func(*advisory.Advisory) error { calls++; return nil })
	if !errors.Is(err, advisory.ErrInvalid) || calls != 0 {
		t.Fatalf("directory: err = %v after %d advisories, want ErrInvalid before any", err, calls)
	}
	if got, err := readZip(zipOf(t, files)); !errors.Is(err, advisory.ErrInvalid) || len(got) != 0 {
		t.Fatalf("zip: err = %v after %d advisories, want ErrInvalid before any", err, len(got))
	}
	if got, err := readZip(zipOf(t, files[:3])); err != nil || len(got) != 3 {
		t.Fatalf("zip at the bound: %d advisories, %v", len(got), err)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestMemoryBounded measures what a document at MaxDocBytes made of the
// cheapest objects costs to parse (decision 0080 quotes the figure).
func TestMemoryBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"id":"X-1","modified":"2024-01-01T00:00:00Z","references":[`)
	for b.Len() < advisory.MaxDocBytes-64 {
		b.WriteString(`{"type":"WEB"},`)
	}
	b.WriteString(`{"type":"WEB"}]}`)
	doc := []byte(b.String())
	allocs := testing.Benchmark(func(bb *testing.B) {
		bb.ReportAllocs()
		for range bb.N {
			if _, err := advisory.Parse(doc); err != nil {
				bb.Fatal(err)
			}
		}
	})
	perOp := allocs.AllocedBytesPerOp()
	t.Logf("a %d-byte document of %d references allocates %d MiB while parsed", len(doc), strings.Count(b.String(), "WEB"), perOp>>20)
	if perOp > 256<<20 {
		t.Errorf("parsing one document allocates %d MiB, more than 256", perOp>>20)
	}
}
