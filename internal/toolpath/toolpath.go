// Package toolpath finds the external programs that tests run, where the project's install
// scripts put them.
package toolpath

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Find looks for the program name on PATH, then in $(go env GOPATH)/bin; it returns "" when
// neither has it.
func Find(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}
