package auth

import (
	"errors"
	"io/fs"

	"github.com/cloudchassis/kit/config"
)

// maxPEMBytes bounds a certificate chain, a private key or a CA bundle that auth reads
// (AUTH_JWKS_FILE has its own limit, AUTH_JWKS_MAX_BYTES); the whole Mozilla root bundle is about
// 220 KB.
const maxPEMBytes = 1 << 20

// readFile reads the file named by variable with config.ReadFileBounded: a regular file (a symbolic
// link to one is fine, as in Kubernetes secret volumes) of at most limit bytes, read within
// config.FileReadTimeout. A device (/dev/zero), a FIFO, a directory or a larger file is refused before
// anything is read. Errors are *config.Problem naming the variable and the path, never the content.
func readFile(variable, path string, limit int64) ([]byte, error) {
	b, err := config.ReadFileBounded(path, limit)
	if err != nil {
		return nil, fileProblem(variable, path, err)
	}
	return b, nil
}

func fileProblem(variable, path string, err error) error {
	return &config.Problem{Var: variable, Value: path, HasValue: true, Err: err}
}

// osError keeps the reason of a file system error (its path is in the problem already).
func osError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
