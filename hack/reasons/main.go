// Command reasons writes the README's table of reasons from the comments of
// the Reason constants in api/v1alpha1/conditions.go, so that the text a
// user reads in the troubleshooting section is the text beside the code.
// `make generate` runs it; its test fails when the README is stale.
//
// Each Reason constant's comment has the shape
//
//	// ReasonName (where it shows): what it means, on one or more lines.
//	// Do: what the user should do, on one or more lines.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

const (
	conditionsFile = "api/v1alpha1/conditions.go"
	readmeFile     = "README.md"

	beginMarker = "<!-- BEGIN reasons: generated from the comments in " + conditionsFile + " by `make generate`; edit them there -->"
	endMarker   = "<!-- END reasons -->"
)

// Reason is one documented reason constant.
type Reason struct {
	Name, Value, Where, Meaning, Do string
}

// docShape is a Reason constant's comment: "Name (where): meaning" and then,
// from a line starting with "Do:", what to do.
var docShape = regexp.MustCompile(`(?s)^(Reason\w+) \(([^)]+)\):\s+(.+?)\nDo:\s+(.+)$`)

func main() {
	root := flag.String("root", ".", "the repository's root folder")
	flag.Parse()
	if err := run(*root); err != nil {
		fmt.Fprintln(os.Stderr, "reasons:", err)
		os.Exit(1)
	}
}

func run(root string) error {
	reasons, err := ParseReasons(filepath.Join(root, conditionsFile))
	if err != nil {
		return err
	}
	readmePath := filepath.Join(root, readmeFile)
	readme, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	updated, err := UpdateReadme(readme, reasons)
	if err != nil {
		return err
	}
	if bytes.Equal(updated, readme) {
		return nil
	}
	return os.WriteFile(readmePath, updated, 0o644)
}

// ParseReasons reads every constant named Reason* in a Go file, in order,
// and fails on one whose comment lacks the documented shape.
func ParseReasons(path string) ([]Reason, error) {
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var reasons []Reason
	var problems []error
	for _, decl := range file.Decls {
		general, ok := decl.(*ast.GenDecl)
		if !ok || general.Tok != token.CONST {
			continue
		}
		for _, spec := range general.Specs {
			value := spec.(*ast.ValueSpec)
			for i, name := range value.Names {
				if !strings.HasPrefix(name.Name, "Reason") {
					continue
				}
				doc := value.Doc
				if !general.Lparen.IsValid() {
					doc = general.Doc // const Name = "Value", outside a group
				}
				reason, err := parseReason(name.Name, value, doc, i)
				if err != nil {
					problems = append(problems, fmt.Errorf("%s: %s: %w", path, name.Name, err))
					continue
				}
				reasons = append(reasons, reason)
			}
		}
	}
	return reasons, errors.Join(problems...)
}

func parseReason(name string, spec *ast.ValueSpec, doc *ast.CommentGroup, index int) (Reason, error) {
	if len(spec.Names) != 1 || index >= len(spec.Values) {
		return Reason{}, errors.New("declare each reason on its own, with its value")
	}
	literal, ok := spec.Values[index].(*ast.BasicLit)
	if !ok || literal.Kind != token.STRING {
		return Reason{}, errors.New("the value must be a string literal")
	}
	value, err := strconv.Unquote(literal.Value)
	if err != nil {
		return Reason{}, err
	}
	match := docShape.FindStringSubmatch(strings.TrimSpace(doc.Text()))
	if match == nil || match[1] != name {
		return Reason{}, fmt.Errorf("the comment must read %q", "// "+name+" (where it shows): what it means.\n// Do: what to do.")
	}
	return Reason{Name: name, Value: value, Where: oneLine(match[2]), Meaning: oneLine(match[3]), Do: oneLine(match[4])}, nil
}

// oneLine joins a comment's lines for a table cell, which, like the
// README's other cells, ends without a full stop.
func oneLine(text string) string {
	return strings.TrimSuffix(strings.ReplaceAll(strings.Join(strings.Fields(text), " "), "|", `\|`), ".")
}

// Table is the README's Markdown table of reasons.
func Table(reasons []Reason) string {
	var table strings.Builder
	table.WriteString("| reason | where it shows | meaning | what to do |\n| --- | --- | --- | --- |\n")
	for _, reason := range reasons {
		fmt.Fprintf(&table, "| `%s` | %s | %s | %s |\n", reason.Value, reason.Where, reason.Meaning, reason.Do)
	}
	return table.String()
}

// UpdateReadme replaces what lies between the markers with the table.
func UpdateReadme(readme []byte, reasons []Reason) ([]byte, error) {
	text := string(readme)
	begin := strings.Index(text, beginMarker)
	end := strings.Index(text, endMarker)
	if begin < 0 || end < begin {
		return nil, fmt.Errorf("%s lacks the lines %q and %q, in that order", readmeFile, beginMarker, endMarker)
	}
	begin += len(beginMarker)
	return []byte(text[:begin] + "\n" + Table(reasons) + text[end:]), nil
}
