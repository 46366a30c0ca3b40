// Package schemas holds the JSON Schemas (draft 2020-12) of rsp's wire
// messages (docs/protocol.md) and validates bodies against them.
//
// The schema files are embedded; each message has one (registration.json,
// outcome.json, ...), and common.json holds the shared definitions they
// reference. Readers ignore unknown fields, so the schemas allow them.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed *.json
var files embed.FS

// BaseURL is the prefix of every schema's $id: BaseURL + "<name>.json".
const BaseURL = "https://rsp.example/schemas/"

// common is the file of shared definitions; it is not a message.
const common = "common"

var (
	once       sync.Once
	compiled   map[string]*jsonschema.Schema
	names      []string
	compileErr error
)

func compileAll() {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		compileErr = err
		return
	}
	var all []string
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		b, err := files.ReadFile(e.Name())
		if err != nil {
			compileErr = err
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			compileErr = fmt.Errorf("schemas: %s: %w", e.Name(), err)
			return
		}
		if err := c.AddResource(BaseURL+e.Name(), doc); err != nil {
			compileErr = fmt.Errorf("schemas: %s: %w", e.Name(), err)
			return
		}
		all = append(all, name)
	}
	m := make(map[string]*jsonschema.Schema, len(all))
	for _, name := range all {
		if name == common {
			continue
		}
		sch, err := c.Compile(BaseURL + name + ".json")
		if err != nil {
			compileErr = fmt.Errorf("schemas: compiling %s: %w", name, err)
			return
		}
		m[name] = sch
		names = append(names, name)
	}
	sort.Strings(names)
	compiled = m
}

// Names returns the names of the message schemas, sorted: "change",
// "deregistration", "failure_report", "outcome", "record",
// "registration", "reports", "resolve_answer", "resolve_request".
func Names() []string {
	once.Do(compileAll)
	return append([]string(nil), names...)
}

// Validate checks a JSON message body against the schema called name
// (one of Names). It returns nil if the body is valid, and otherwise an
// error that says where and why it is not. An empty body is a valid
// resolve_request (the protocol allows a request without a body).
func Validate(name string, body []byte) error {
	once.Do(compileAll)
	if compileErr != nil {
		return compileErr
	}
	sch, ok := compiled[name]
	if !ok {
		return fmt.Errorf("schemas: no schema %q (have %s)", name, strings.Join(names, ", "))
	}
	if name == "resolve_request" && len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("schemas: %s: body is not valid JSON: %w", name, err)
	}
	if err := sch.Validate(doc); err != nil {
		return fmt.Errorf("schemas: %s: %w", name, err)
	}
	return nil
}

// Schema returns the text of the schema file called name (a message name
// or "common").
func Schema(name string) ([]byte, error) {
	return files.ReadFile(name + ".json")
}
