// Package hostilefile makes the files that tests point NAME_FILE variables at, to check that a
// file variable is refused at once or read without its content leaking into a message: a FIFO
// nobody writes to, a file just over config.MaxFileSize, and a line shaped like /etc/shadow. Each
// file with content holds the caller's marker, which no message may show.
package hostilefile

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cloudchassis/kit/config"
)

// Files are the paths Make wrote.
type Files struct {
	FIFO   string // a named pipe nobody writes to: reading it would block for ever
	Big    string // lines of marker, more than config.MaxFileSize bytes
	Shadow string // "root:$6$<marker>:19000:0:99999:7:::", a password file's line
}

// Make writes the files into dir.
func Make(t testing.TB, dir, marker string) Files {
	t.Helper()
	f := Files{FIFO: filepath.Join(dir, "fifo"), Big: filepath.Join(dir, "big"), Shadow: filepath.Join(dir, "shadow")}
	if err := syscall.Mkfifo(f.FIFO, 0o600); err != nil {
		t.Fatal(err)
	}
	line := []byte(marker + "\n")
	if err := os.WriteFile(f.Big, bytes.Repeat(line, config.MaxFileSize/len(line)+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Shadow, []byte("root:$6$"+marker+":19000:0:99999:7:::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
