package auth

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/cloudchassis/kit/config"
)

// Limits of the files auth reads (AUTH_JWKS_FILE, TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE).
const (
	// maxPEMBytes bounds a certificate chain, a private key or a CA bundle; the whole Mozilla root
	// bundle is about 220 KB.
	maxPEMBytes = 1 << 20
	// fileReadTimeout bounds reading one file (a stalled network file system).
	fileReadTimeout = 5 * time.Second
)

// readFile reads the file named by variable: a regular file (a symbolic link to one is fine, as in
// Kubernetes secret volumes) of at most limit bytes, within fileReadTimeout. A device (/dev/zero),
// a FIFO, a directory or a larger file is refused before anything is read. Errors are
// *config.Problem naming the variable and the path, never the content.
//
// When a read outlives the timeout, the goroutine doing it is left to finish on its own (a system
// call cannot be interrupted); its result is dropped.
func readFile(variable, path string, limit int64) ([]byte, error) {
	type result struct {
		data []byte
		err  error
	}
	done := make(chan result, 1) // never blocks the reader, even after the timeout
	go func() {
		b, err := readRegular(path, limit)
		done <- result{b, err}
	}()
	t := time.NewTimer(fileReadTimeout)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fileProblem(variable, path, r.err)
		}
		return r.data, nil
	case <-t.C:
		return nil, fileProblem(variable, path, fmt.Errorf("not read within %s", fileReadTimeout))
	}
}

func fileProblem(variable, path string, err error) error {
	return &config.Problem{Var: variable, Value: path, HasValue: true, Err: err}
}

func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, osError(err)
	}
	if err := regular(fi, limit); err != nil {
		return nil, err
	}
	// Non-blocking, so that a FIFO swapped in after the Stat cannot hang the open; the second check
	// below refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|openNonBlock, 0)
	if err != nil {
		return nil, osError(err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, osError(err)
	}
	if err := regular(fi, limit); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, osError(err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

func regular(fi fs.FileInfo, limit int64) error {
	m := fi.Mode()
	if !m.IsRegular() {
		kind := "not a regular file"
		switch {
		case m.IsDir():
			kind = "a directory"
		case m&fs.ModeNamedPipe != 0:
			kind = "a named pipe (FIFO)"
		case m&fs.ModeSocket != 0:
			kind = "a socket"
		case m&fs.ModeDevice != 0:
			kind = "a device"
		}
		return fmt.Errorf("%s, want a regular file", kind)
	}
	if fi.Size() > limit {
		return fmt.Errorf("%d bytes, larger than the %d allowed", fi.Size(), limit)
	}
	return nil
}

// osError keeps the reason of a file system error (its path is in the problem already).
func osError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
