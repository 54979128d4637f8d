//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

// detach puts the child in its own process group, so that a terminal's Ctrl-C reaches only the demo.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
