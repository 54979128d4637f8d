package config

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Var describes one environment variable of a spec.
type Var struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Default     string `json:"default,omitempty"`
	HasDefault  bool   `json:"-"`
	Required    bool   `json:"required,omitempty"`
	Secret      bool   `json:"secret,omitempty"`
	Description string `json:"description,omitempty"`
	Validate    string `json:"validate,omitempty"`
	// Group is a heading for the variable in WriteUsage; Reference leaves it empty and callers that
	// assemble several specs set it. Variables of a group are expected to be contiguous.
	Group string `json:"group,omitempty"`
}

// Reference describes every variable spec reads, in declaration order. spec is a pointer to a struct;
// its values are not read.
func Reference(spec any, opts ...Option) ([]Var, error) {
	o := newOptions(opts)
	fields, err := walk(spec, o.prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Var, 0, len(fields))
	for _, f := range fields {
		out = append(out, Var{
			Name:        f.key,
			Type:        typeName(f.value.Type()),
			Default:     f.def,
			HasDefault:  f.hasDefault,
			Required:    f.required,
			Secret:      f.secret,
			Description: f.desc,
			Validate:    f.sf.Tag.Get("validate"),
		})
	}
	return out, nil
}

// DefaultUsageWidth is the line width WriteUsage wraps to.
const DefaultUsageWidth = 100

// WriteUsage prints the reference for a -help flag, wrapped to DefaultUsageWidth columns; see
// WriteUsageWidth.
func WriteUsage(w io.Writer, vars []Var) error {
	return WriteUsageWidth(w, vars, DefaultUsageWidth)
}

// WriteUsageWidth prints the reference for a -help flag: a heading for each Group, then one entry
// per variable, its name and its description followed by the type, default, and whether it is
// required or secret, the description wrapped under itself so that no line is longer than width
// (except a single word that does not fit). A width below 40 counts as 40.
func WriteUsageWidth(w io.Writer, vars []Var, width int) error {
	width = max(width, 40)
	var b strings.Builder
	for i := 0; i < len(vars); {
		j := i + 1
		for j < len(vars) && vars[j].Group == vars[i].Group {
			j++
		}
		if g := vars[i].Group; g != "" {
			if i > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(g + ":\n")
		}
		// The descriptions of a group start in one column, after its longest name unless that would
		// leave them less than two thirds of the line; longer names put their text on the next line.
		col := 0
		for _, v := range vars[i:j] {
			col = max(col, len(v.Name))
		}
		col = 2 + min(col, width/3) + 2
		for _, v := range vars[i:j] {
			writeEntry(&b, v, col, width)
		}
		i = j
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeEntry(b *strings.Builder, v Var, col, width int) {
	var facts []string
	if v.Type != "" {
		facts = append(facts, v.Type)
	}
	if v.HasDefault || v.Default != "" {
		d := v.Default
		if d == "" || strings.ContainsAny(d, " \t") {
			d = strconv.Quote(d)
		}
		facts = append(facts, "default "+d)
	}
	if v.Required {
		facts = append(facts, "required")
	}
	if v.Secret {
		facts = append(facts, "secret; or "+v.Name+"_FILE")
	}
	text := strings.TrimSpace(v.Description)
	if len(facts) > 0 {
		text = strings.TrimSpace(text + " (" + strings.Join(facts, ", ") + ")")
	}
	line := "  " + v.Name
	if len(line)+2 > col {
		b.WriteString(line + "\n")
		line = ""
	}
	b.WriteString(wrap(line+strings.Repeat(" ", col-len(line)), text, col, width))
}

// wrap appends text to first, whose length is the indent of the following lines, breaking lines at
// spaces so that none is longer than width, and inside a word too long for a line after its commas.
// Only a piece with no space nor comma can make a line longer.
func wrap(first, text string, indent, width int) string {
	var b strings.Builder
	line, n := first, 0 // n: pieces on the current line
	for _, word := range strings.Fields(text) {
		pieces := []string{word}
		if indent+len(word) > width {
			pieces = strings.SplitAfter(word, ",")
		}
		for i, p := range pieces {
			sep := " "
			if i > 0 {
				sep = "" // the rest of a word split at its commas
			}
			if n > 0 && len(line)+len(sep)+len(p) > width {
				b.WriteString(line + "\n")
				line, n, sep = strings.Repeat(" ", indent), 0, ""
			}
			if n == 0 {
				sep = ""
			}
			line += sep + p
			n++
		}
	}
	b.WriteString(strings.TrimRight(line, " ") + "\n")
	return b.String()
}

// Wrap breaks text into lines of at most width columns (at spaces; inside a word too long for a
// line, after its commas), for text printed around WriteUsage's.
func Wrap(text string, width int) string { return wrap("", text, 0, max(width, 40)) }

// WriteMarkdown prints the reference as a Markdown table, for READMEs.
func WriteMarkdown(w io.Writer, vars []Var) error {
	var b strings.Builder
	b.WriteString("| Variable | Type | Default | Required | Description |\n|---|---|---|---|---|\n")
	esc := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, v := range vars {
		def := ""
		if v.HasDefault {
			def = "`" + esc.Replace(v.Default) + "`"
			if v.Default == "" {
				def = `""`
			}
		}
		req := ""
		if v.Required {
			req = "yes"
		}
		desc := esc.Replace(v.Description)
		if v.Validate != "" {
			desc = strings.TrimSpace(desc + " (`" + esc.Replace(v.Validate) + "`)")
		}
		if v.Secret {
			desc = strings.TrimSpace(desc + " Secret: redacted in dumps; may be read from `" + v.Name + "_FILE`.")
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", v.Name, v.Type, def, req, desc)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Setting is a variable's current value in a loaded spec, for diagnostics.
type Setting struct {
	Name   string `json:"name"`
	Value  string `json:"value"`            // "[REDACTED]" for secrets; URLs have their password removed
	Source string `json:"source"`           // env, file, default, or unset (value from code or zero)
	File   string `json:"file,omitempty"`   // the file a _FILE variable named
	Secret bool   `json:"secret,omitempty"` // whether Value was redacted
}

// Dump lists the current values of spec, a loaded config, with secrets redacted, and where each value
// came from according to the environment seen through the options. It is safe to print and serve.
func Dump(spec any, opts ...Option) ([]Setting, error) {
	o := newOptions(opts)
	fields, err := walk(spec, o.prefix)
	if err != nil {
		return nil, err
	}
	o.readFile = func(string) ([]byte, error) { return nil, nil } // Dump never reads secrets
	out := make([]Setting, 0, len(fields))
	for _, f := range fields {
		s := Setting{Name: f.key, Value: display(f.value), Secret: f.secret}
		if f.secret && s.Value != "" {
			s.Value = redacted
		}
		r, _ := o.value(f)
		switch r.src {
		case sourceEnv:
			s.Source = "env"
		case sourceFile:
			s.Source = "file"
			s.File, _ = o.lookup(f.key + "_FILE")
		case sourceDefault:
			s.Source = "default"
		default:
			s.Source = "unset"
		}
		out = append(out, s)
	}
	return out, nil
}
