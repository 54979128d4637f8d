package discoverytest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// filterExpr is the subset of Consul's filter language (go-bexpr) the fake understands: clauses joined
// with "and", optionally parenthesized, each one of
//
//	<selector> == <string>    <selector> != <string>
//	<string> in <selector>    <string> not in <selector>
//	<selector> is empty       <selector> is not empty
//
// where a selector is Service.ID, Service.Service, Service.Address, Service.Port, Service.Tags,
// Service.Meta.<key>, Service.Meta["<key>"] or Node.Node, and a string is "..." or `...`.
type filterExpr []clause

type clause struct {
	sel    []string
	op     string
	value  string
	negate bool
}

// fields is what a filter sees of one instance.
type fields struct {
	id, service, address, node string
	port                       int
	tags                       []string
	meta                       map[string]string
}

func parseFilter(s string) (filterExpr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	// Parentheses only group "and" chains here, so they can be dropped once balanced.
	depth := 0
	var flat []string
	for _, t := range toks {
		switch t {
		case "(":
			depth++
		case ")":
			depth--
			if depth < 0 {
				return nil, errors.New("unbalanced parentheses")
			}
		default:
			flat = append(flat, t)
		}
	}
	if depth != 0 {
		return nil, errors.New("unbalanced parentheses")
	}
	var expr filterExpr
	for len(flat) > 0 {
		c, rest, err := parseClause(flat)
		if err != nil {
			return nil, err
		}
		expr = append(expr, c)
		flat = rest
		if len(flat) > 0 {
			if flat[0] != "and" {
				return nil, fmt.Errorf("unsupported operator %q (the fake understands only \"and\")", flat[0])
			}
			flat = flat[1:]
			if len(flat) == 0 {
				return nil, errors.New("expression ends with \"and\"")
			}
		}
	}
	return expr, nil
}

func parseClause(t []string) (clause, []string, error) {
	isStr := func(s string) bool { return strings.HasPrefix(s, "\x00") }
	switch {
	case len(t) >= 3 && isStr(t[0]) && t[1] == "in":
		sel, err := selector(t[2])
		return clause{sel: sel, op: "in", value: t[0][1:]}, t[3:], err
	case len(t) >= 4 && isStr(t[0]) && t[1] == "not" && t[2] == "in":
		sel, err := selector(t[3])
		return clause{sel: sel, op: "in", value: t[0][1:], negate: true}, t[4:], err
	case len(t) >= 3 && (t[1] == "==" || t[1] == "!=") && isStr(t[2]):
		sel, err := selector(t[0])
		return clause{sel: sel, op: "==", value: t[2][1:], negate: t[1] == "!="}, t[3:], err
	case len(t) >= 3 && t[1] == "is" && t[2] == "empty":
		sel, err := selector(t[0])
		return clause{sel: sel, op: "empty"}, t[3:], err
	case len(t) >= 4 && t[1] == "is" && t[2] == "not" && t[3] == "empty":
		sel, err := selector(t[0])
		return clause{sel: sel, op: "empty", negate: true}, t[4:], err
	}
	return clause{}, nil, fmt.Errorf("unsupported expression near %q", strings.Join(t, " "))
}

func selector(s string) ([]string, error) {
	if strings.HasPrefix(s, "\x00") {
		return nil, errors.New("string where a selector was expected")
	}
	var parts []string
	for {
		i := strings.IndexAny(s, ".[")
		if i < 0 {
			parts = append(parts, s)
			break
		}
		if i > 0 {
			parts = append(parts, s[:i])
		}
		if s[i] == '.' {
			s = s[i+1:]
			continue
		}
		lit, next, err := indexExpr(s, i)
		if err != nil {
			return nil, err
		}
		key, err := unquote(lit)
		if err != nil {
			return nil, err
		}
		parts = append(parts, key)
		s = s[next:]
		s = strings.TrimPrefix(s, ".")
		if s == "" {
			break
		}
	}
	valid := len(parts) == 2 && slices.Contains([]string{"ID", "Service", "Address", "Port", "Tags", "Meta"}, parts[1]) && parts[0] == "Service" ||
		len(parts) == 3 && parts[0] == "Service" && parts[1] == "Meta" ||
		len(parts) == 2 && parts[0] == "Node" && parts[1] == "Node"
	if !valid {
		return nil, fmt.Errorf("unsupported selector %q", strings.Join(parts, "."))
	}
	return parts, nil
}

// indexExpr reads the index expression `[ "key" ]` that starts at s[i] == '[' and returns the string
// literal inside and the position after the closing bracket. The literal may contain brackets.
func indexExpr(s string, i int) (lit string, next int, err error) {
	k := i + 1
	for k < len(s) && (s[k] == ' ' || s[k] == '\t') {
		k++
	}
	if k >= len(s) || (s[k] != '"' && s[k] != '`') {
		return "", 0, errors.New("invalid index: a string literal must follow [")
	}
	end := strings.IndexByte(s[k+1:], s[k])
	if end < 0 {
		return "", 0, errors.New("unterminated string literal")
	}
	lit = s[k : k+end+2]
	k += end + 2
	for k < len(s) && (s[k] == ' ' || s[k] == '\t') {
		k++
	}
	if k >= len(s) || s[k] != ']' {
		return "", 0, errors.New("unclosed index expression")
	}
	return lit, k + 1, nil
}

func unquote(s string) (string, error) {
	if len(s) >= 2 && s[0] == '`' && s[len(s)-1] == '`' {
		return s[1 : len(s)-1], nil
	}
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strconv.Unquote(s)
	}
	return "", fmt.Errorf("not a string literal: %s", s)
}

func tokenize(s string) ([]string, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			toks = append(toks, string(c))
			i++
		case c == '"' || c == '`':
			end := strings.IndexByte(s[i+1:], c)
			if end < 0 {
				return nil, errors.New("unterminated string literal")
			}
			v, err := unquote(s[i : i+end+2])
			if err != nil {
				return nil, err
			}
			toks = append(toks, "\x00"+v) // marks a string token
			i += end + 2
		case c == '=' || c == '!':
			if i+1 >= len(s) || s[i+1] != '=' {
				return nil, fmt.Errorf("unexpected %q", c)
			}
			toks = append(toks, s[i:i+2])
			i += 2
		default:
			j := i
			for j < len(s) {
				d := s[j]
				if d == '[' {
					_, next, err := indexExpr(s, j)
					if err != nil {
						return nil, err
					}
					j = next
					continue
				}
				if d == ' ' || d == '\t' || d == '\n' || d == '\r' || d == '(' || d == ')' || d == '=' || d == '!' {
					break
				}
				j++
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	return toks, nil
}

func (e filterExpr) match(f fields) bool {
	for _, c := range e {
		if c.eval(f) == c.negate {
			return false
		}
	}
	return true
}

func (c clause) eval(f fields) bool {
	if c.sel[0] == "Node" {
		return c.scalar(f.node)
	}
	switch c.sel[1] {
	case "ID":
		return c.scalar(f.id)
	case "Service":
		return c.scalar(f.service)
	case "Address":
		return c.scalar(f.address)
	case "Port":
		return c.scalar(strconv.Itoa(f.port))
	case "Tags":
		switch c.op {
		case "in":
			return slices.Contains(f.tags, c.value)
		case "empty":
			return len(f.tags) == 0
		}
		return false
	}
	// Meta
	if len(c.sel) == 2 {
		switch c.op {
		case "in":
			_, ok := f.meta[c.value]
			return ok
		case "empty":
			return len(f.meta) == 0
		}
		return false
	}
	return c.scalar(f.meta[c.sel[2]])
}

func (c clause) scalar(v string) bool {
	switch c.op {
	case "==":
		return v == c.value
	case "in":
		return strings.Contains(v, c.value)
	case "empty":
		return v == ""
	}
	return false
}
