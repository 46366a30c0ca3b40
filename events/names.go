package events

import (
	"fmt"
	"regexp"
)

// Name rules of the protocol's "Names" table.
var (
	scopeRule = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	poolRule  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
	peIDRule  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
)

// DefaultScope is the scope used when none is named.
const DefaultScope = "default"

// FieldError is a bad input: it names the field and the rule it broke.
type FieldError struct {
	Field string
	Rule  string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Rule }

// Errf returns a FieldError for field with a formatted rule.
func Errf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Rule: fmt.Sprintf(format, args...)}
}

func checkName(field string, rule *regexp.Regexp, v string) error {
	if !rule.MatchString(v) {
		return Errf(field, "%q does not match %s", v, rule.String())
	}
	return nil
}

// CheckScope validates a scope name.
func CheckScope(s string) error { return checkName("scope", scopeRule, s) }

// CheckPool validates a pool handle.
func CheckPool(p string) error { return checkName("pool", poolRule, p) }

// CheckPEID validates a PE id.
func CheckPEID(id string) error { return checkName("pe_id", peIDRule, id) }
