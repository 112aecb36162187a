package remediate

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// codeReasons returns the values of the package's Reason constants in the
// order they are declared, and the files that declare them.
func codeReasons(t *testing.T) (reasons []string, files map[string]bool) {
	t.Helper()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	files = map[string]bool{}
	fset := token.NewFileSet()
	for _, path := range paths {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for k, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Reason") || k >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[k].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: %s is not a string literal", path, name.Name)
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					reasons = append(reasons, v)
					files[path] = true
				}
			}
		}
	}
	return reasons, files
}

// readmeReasons returns the rows of the reasons table of the README's
// Remediation section: reason and result, in order.
func readmeReasons(t *testing.T) (reasons []string, results []Result) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Remediation\n")
	if !ok {
		t.Fatal("README.md has no Remediation section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	_, table, ok := strings.Cut(section, "\n| reason | result | meaning |\n|---|---|---|\n")
	if !ok {
		t.Fatal("the Remediation section of README.md has no table headed | reason | result | meaning |")
	}
	for line := range strings.Lines(table) {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			t.Fatalf("README.md reasons table: row %q has fewer than 3 columns", line)
		}
		reasons = append(reasons, strings.Trim(strings.TrimSpace(cells[1]), "`"))
		results = append(results, Result(strings.TrimSpace(cells[2])))
	}
	return reasons, results
}

// TestReasonsInREADME: the README's table of reasons names exactly the
// reasons the code has, in the order reasons.go declares them (the order
// they are checked), each with the result the code gives it; and reasons.go
// declares them all.
func TestReasonsInREADME(t *testing.T) {
	code, files := codeReasons(t)
	if len(files) != 1 || !files["reasons.go"] {
		t.Errorf("Reason constants are declared in %v, want reasons.go only", files)
	}
	readme, results := readmeReasons(t)
	for _, r := range code {
		if !slices.Contains(readme, r) {
			t.Errorf("reason %s is missing from the README's reasons table", r)
		}
	}
	for _, r := range readme {
		if !slices.Contains(code, r) {
			t.Errorf("the README's reasons table names %q, which the code does not have", r)
		}
	}
	if !t.Failed() && !slices.Equal(code, readme) {
		t.Errorf("the README's reasons table is in the order\n%v\nwant the order of reasons.go\n%v", readme, code)
	}
	for i, r := range readme {
		if want := resultOf(r); results[i] != want {
			t.Errorf("the README's reasons table gives %s the result %q, the code %q", r, results[i], want)
		}
	}
}
