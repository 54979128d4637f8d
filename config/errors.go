package config

import (
	"fmt"
	"strings"
)

const redacted = "[REDACTED]"

// Problem is one bad or missing variable.
type Problem struct {
	Var      string // variable name, e.g. "PORT"; empty for problems that concern no single variable
	Value    string // the offending value, "[REDACTED]" for secrets; meaningful when HasValue
	HasValue bool
	Want     string // what was expected, e.g. "integer: public HTTP port"
	Err      error  // what is wrong
}

// Invalid reports a problem with one variable from a Validate method:
//
//	return config.Invalid("MAX_CONNS", strconv.Itoa(c.MaxConns), "must be at least MIN_CONNS")
//
// Load redacts value when the variable is secret.
func Invalid(variable, value, reason string) error {
	return &Problem{Var: variable, Value: value, HasValue: true, Err: plainError(reason)}
}

type plainError string

func (e plainError) Error() string { return string(e) }

// Error renders the problem as `PORT="abc": not an integer; want integer: public HTTP port`.
func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.Var)
	if p.HasValue {
		if p.Var != "" {
			b.WriteByte('=')
		}
		fmt.Fprintf(&b, "%q", p.Value)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(p.Err.Error())
	if p.Want != "" {
		b.WriteString("; want ")
		b.WriteString(p.Want)
	}
	return b.String()
}

func (p *Problem) Unwrap() error { return p.Err }

// Error lists every problem Load found. Its message has one line per problem.
type Error struct {
	Problems []Problem
}

func (e *Error) add(p Problem) { e.Problems = append(e.Problems, p) }

func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Problems) == 1 {
		b.WriteString("config: ")
		b.WriteString(e.Problems[0].Error())
		return b.String()
	}
	fmt.Fprintf(&b, "config: %d problems:", len(e.Problems))
	for i := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(e.Problems[i].Error())
	}
	return b.String()
}

// Unwrap returns each problem, so errors.Is and errors.As see through the list.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i := range e.Problems {
		out[i] = &e.Problems[i]
	}
	return out
}
