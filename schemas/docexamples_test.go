package schemas

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// protocolDoc is the normative description whose JSON examples must stay
// valid.
const protocolDoc = "../docs/protocol.md"

// schemaMarker is the line that names the schema of the JSON example right
// below it.
var schemaMarker = regexp.MustCompile(`^<!-- schema: ([a-z_]+) -->$`)

// docExample is one JSON example of a document.
type docExample struct {
	schema string
	line   int // of the opening fence
	body   string
}

// docExamples returns the JSON examples of the Markdown file path and
// what is wrong with their markup: every ```json block must come right
// after a schema marker line, and every marker line must be followed by a
// ```json block.
func docExamples(path string) ([]docExample, []string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var (
		out      []docExample
		problems []string
		schema   string // from the marker on the previous line
		cur      *docExample
		body     strings.Builder
		n        int
	)
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf("%s:%d: ", path, n)+fmt.Sprintf(format, args...))
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		l := sc.Text()
		if cur != nil {
			if strings.TrimSpace(l) == "```" {
				cur.body = body.String()
				out = append(out, *cur)
				cur = nil
				continue
			}
			body.WriteString(l + "\n")
			continue
		}
		marked := schema
		schema = ""
		switch m := schemaMarker.FindStringSubmatch(l); {
		case m != nil:
			schema = m[1]
		case strings.TrimSpace(l) == "```json":
			if marked == "" {
				bad("a JSON example without a <!-- schema: NAME --> line right above it")
			}
			cur = &docExample{schema: marked, line: n}
			body.Reset()
		case marked != "":
			bad("the schema marker of line %d is not followed by a ```json block", n-1)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if cur != nil {
		n = cur.line
		bad("JSON example not closed")
	}
	if schema != "" {
		bad("the schema marker on the last line has no example")
	}
	return out, problems, nil
}

// TestProtocolDocExamples validates every JSON example of docs/protocol.md
// against the schema its marker names, so the examples stay in line with
// the schemas.
func TestProtocolDocExamples(t *testing.T) {
	examples, problems, err := docExamples(protocolDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(examples) < 10 {
		t.Fatalf("%s: only %d JSON examples found; is the marker format still <!-- schema: NAME --> + ```json?", protocolDoc, len(examples))
	}
	seen := map[string]bool{}
	for _, e := range examples {
		seen[e.schema] = true
		if err := Validate(e.schema, []byte(e.body)); err != nil {
			t.Errorf("%s:%d: the example is not a valid %s:\n%s%v", protocolDoc, e.line, e.schema, e.body, err)
		}
	}
	// The messages a plain client sends or reads each have an example.
	for _, name := range []string{"registration", "deregistration", "failure_report", "outcome", "record", "resolve_request", "resolve_answer", "change"} {
		if !seen[name] {
			t.Errorf("%s: no JSON example of %s", protocolDoc, name)
		}
	}
}

// TestDocExamplesChecker: the checker finds the examples, an unmarked one,
// a marker without an example, and a broken example fails validation.
func TestDocExamplesChecker(t *testing.T) {
	doc := "x\n<!-- schema: outcome -->\n```json\n{\"pe_id\": \"a\", \"seq\": 0, \"accepted\": true}\n```\n" +
		"```json\n{}\n```\n" +
		"<!-- schema: change -->\ntext\n" +
		"<!-- schema: change -->\n```json\n{\n"
	path := t.TempDir() + "/doc.md"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	examples, problems, err := docExamples(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) != 2 || examples[0].schema != "outcome" || examples[0].line != 3 || examples[1].schema != "" {
		t.Fatalf("examples = %+v", examples)
	}
	if err := Validate(examples[0].schema, []byte(examples[0].body)); err == nil {
		t.Error("an accepted outcome with seq 0 validated")
	}
	want := []string{
		path + ":6: a JSON example without",
		path + ":10: the schema marker of line 9 is not followed",
		path + ":12: JSON example not closed",
	}
	if len(problems) != len(want) {
		t.Fatalf("problems = %q", problems)
	}
	for i, w := range want {
		if !strings.HasPrefix(problems[i], w) {
			t.Errorf("problem %d = %q, want %q...", i, problems[i], w)
		}
	}
}
