package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const root = "../.."

// The rule: every constant named Reason* in conditions.go has a row in the
// generated table, with its comment's text, and no row elsewhere in the
// README names one of them. Rows that are not reasons (attempt errors, API
// answers, other messages) are hand-written below the generated table.

// TestReadmeTableIsCurrent fails when a reason was added, removed or
// reworded in conditions.go without regenerating the README.
func TestReadmeTableIsCurrent(t *testing.T) {
	reasons, err := ParseReasons(filepath.Join(root, conditionsFile))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, readmeFile))
	if err != nil {
		t.Fatal(err)
	}
	updated, err := UpdateReadme(readme, reasons)
	if err != nil {
		t.Fatal(err)
	}
	if string(updated) != string(readme) {
		t.Errorf("the README's table of reasons differs from the comments in %s; run `make generate`. Want:\n%s", conditionsFile, Table(reasons))
	}

	// The hand-written rows must not describe a reason a second time.
	text := string(readme)
	outside := text[:strings.Index(text, beginMarker)] + text[strings.Index(text, endMarker):]
	for line := range strings.SplitSeq(outside, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 3 {
			continue
		}
		for _, reason := range reasons {
			if strings.Contains(cells[1], "`"+reason.Value+"`") {
				t.Errorf("README row %q names the reason %s outside the generated table; document it in %s instead", line, reason.Value, conditionsFile)
			}
		}
	}
}

// reasonArguments maps the functions that take a condition or event reason
// to that argument's position.
var reasonArguments = map[string]int{
	"Eventf":         3, // events.EventRecorder
	"normal":         2, // controllers' reporter
	"warning":        2,
	"event":          2, // the dispatcher's status reporter
	"readyCondition": 2,
}

// TestReasonsAreConstants fails when code passes a reason as a string
// literal, which would bypass the documented constants.
func TestReasonsAreConstants(t *testing.T) {
	for _, folder := range []string{"controllers", "dispatcher", "internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, folder), func(path string, entry fs.DirEntry, err error) error {
			if err != nil || entry.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			files := token.NewFileSet()
			file, err := parser.ParseFile(files, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(file, func(node ast.Node) bool {
				for _, literal := range literalReasons(node) {
					t.Errorf("%s: reason %s is a string literal; use a documented constant from %s", files.Position(literal.Pos()), literal.Value, conditionsFile)
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// literalReasons are the string literals a node gives as a reason: an
// argument of a function in reasonArguments, or a Reason/reason field.
func literalReasons(node ast.Node) []*ast.BasicLit {
	var candidates []ast.Expr
	switch node := node.(type) {
	case *ast.CallExpr:
		var name string
		switch fun := node.Fun.(type) {
		case *ast.SelectorExpr:
			name = fun.Sel.Name
		case *ast.Ident:
			name = fun.Name
		}
		if position, ok := reasonArguments[name]; ok && position < len(node.Args) {
			candidates = append(candidates, node.Args[position])
		}
	case *ast.KeyValueExpr:
		if key, ok := node.Key.(*ast.Ident); ok && strings.EqualFold(key.Name, "reason") {
			candidates = append(candidates, node.Value)
		}
	}
	var literals []*ast.BasicLit
	for _, candidate := range candidates {
		if literal, ok := candidate.(*ast.BasicLit); ok && literal.Kind == token.STRING {
			literals = append(literals, literal)
		}
	}
	return literals
}

// TestParseReasonsRefusesAnUndocumentedReason: a reason without both its
// meaning and what to do is an error, not a row with a blank cell.
func TestParseReasonsRefusesAnUndocumentedReason(t *testing.T) {
	for name, source := range map[string]string{
		"no comment":        "const ReasonX = \"X\"\n",
		"no where":          "// ReasonX: it broke.\n// Do: fix it.\nconst ReasonX = \"X\"\n",
		"no what to do":     "// ReasonX (Ready=False): it broke.\nconst ReasonX = \"X\"\n",
		"another name":      "// ReasonY (Ready=False): it broke.\n// Do: fix it.\nconst ReasonX = \"X\"\n",
		"not a literal":     "// ReasonX (Ready=False): it broke.\n// Do: fix it.\nconst ReasonX = other\n",
		"grouped with more": "// ReasonX (Ready=False): it broke.\n// Do: fix it.\nconst ReasonX, ReasonY = \"X\", \"Y\"\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "conditions.go")
			if err := os.WriteFile(path, []byte("package v1alpha1\n\n"+source), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := ParseReasons(path); err == nil {
				t.Error("ParseReasons accepted it")
			}
		})
	}

	path := filepath.Join(t.TempDir(), "conditions.go")
	documented := "package v1alpha1\n\n// ReasonX (Ready=False): it | broke\n// badly.\n// Do: fix it.\nconst ReasonX = \"X\"\n"
	if err := os.WriteFile(path, []byte(documented), 0o644); err != nil {
		t.Fatal(err)
	}
	reasons, err := ParseReasons(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Reason{Name: "ReasonX", Value: "X", Where: "Ready=False", Meaning: `it \| broke badly`, Do: "fix it"}
	if len(reasons) != 1 || reasons[0] != want {
		t.Errorf("got %+v, want %+v", reasons, want)
	}
}
