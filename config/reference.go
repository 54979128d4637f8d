package config

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
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

// WriteUsage prints the reference as an aligned table for a -help flag.
func WriteUsage(w io.Writer, vars []Var) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tTYPE\tDEFAULT\tREQUIRED\tDESCRIPTION")
	for _, v := range vars {
		req := ""
		if v.Required {
			req = "yes"
		}
		desc := v.Description
		if v.Secret {
			desc = strings.TrimSpace(desc + " (secret; or " + v.Name + "_FILE)")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Name, v.Type, v.Default, req, desc)
	}
	return tw.Flush()
}

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
