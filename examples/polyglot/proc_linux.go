//go:build linux

package main

import (
	"os/exec"
	"syscall"
)

// detach puts the child in its own process group (a terminal's Ctrl-C reaches only the demo, which
// stops the children) and has the kernel SIGKILL it if the demo dies without cleaning up.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
