package events

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckNames(t *testing.T) {
	type check struct {
		name  string
		field string
		f     func(string) error
	}
	scope := check{"CheckScope", "scope", CheckScope}
	pool := check{"CheckPool", "pool", CheckPool}
	peID := check{"CheckPEID", "pe_id", CheckPEID}
	cases := []struct {
		c  check
		in string
		ok bool
	}{
		{scope, "default", true},
		{scope, "a", true},
		{scope, "0", true},
		{scope, "a-b_c9", true},
		{scope, strings.Repeat("s", 64), true},
		{scope, strings.Repeat("s", 65), false},
		{scope, "", false},
		{scope, "-a", false},
		{scope, "_a", false},
		{scope, "a.b", false},
		{scope, ".", false},
		{scope, "Default", false},
		{scope, "a b", false},
		{scope, "*", false},
		{scope, ">", false},
		{scope, "a\n", false},
		{scope, "é", false},

		{pool, "echo", true},
		{pool, "Echo-1_X", true},
		{pool, "9", true},
		{pool, strings.Repeat("p", 128), true},
		{pool, strings.Repeat("p", 129), false},
		{pool, "", false},
		{pool, "-echo", false},
		{pool, "_echo", false},
		{pool, "echo.1", false},
		{pool, ".", false},
		{pool, "echo*", false},
		{pool, "echo\n", false},

		{peID, "echo-1", true},
		{peID, "E", true},
		{peID, "a_B-3", true},
		{peID, strings.Repeat("x", 64), true},
		{peID, strings.Repeat("x", 65), false},
		{peID, strings.Repeat("x", 128), false},
		{peID, "", false},
		{peID, "-echo", false},
		{peID, "_echo", false},
		{peID, "echo.1", false},
		{peID, ".", false},
		{peID, "echo 1", false},
		{peID, "echo/1", false},
	}
	for _, c := range cases {
		err := c.c.f(c.in)
		if (err == nil) != c.ok {
			t.Errorf("%s(%q) = %v, want ok=%v", c.c.name, c.in, err, c.ok)
			continue
		}
		if err == nil {
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%s(%q) = %T, want *FieldError", c.c.name, c.in, err)
			continue
		}
		if fe.Field != c.c.field {
			t.Errorf("%s(%q): field %q, want %q", c.c.name, c.in, fe.Field, c.c.field)
		}
		if !strings.Contains(fe.Rule, "^[") || !strings.HasPrefix(err.Error(), c.c.field+": ") {
			t.Errorf("%s(%q): error %q does not name the field and the rule", c.c.name, c.in, err)
		}
	}
}

func TestNameRulesMatchProtocol(t *testing.T) {
	// The patterns of protocol.md's Names table, verbatim.
	for _, c := range []struct{ got, want string }{
		{scopeRule.String(), `^[a-z0-9][a-z0-9_-]{0,63}$`},
		{poolRule.String(), `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`},
		{peIDRule.String(), `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`},
	} {
		if c.got != c.want {
			t.Errorf("rule %s, protocol says %s", c.got, c.want)
		}
	}
	if CheckScope(DefaultScope) != nil {
		t.Errorf("DefaultScope %q is not a valid scope", DefaultScope)
	}
}

func TestFieldError(t *testing.T) {
	err := Errf("transports[0].addr", "%q is not HOST:PORT", "x")
	if got, want := err.Error(), `transports[0].addr: "x" is not HOST:PORT`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if err.Field != "transports[0].addr" {
		t.Fatalf("Field = %q", err.Field)
	}
}
