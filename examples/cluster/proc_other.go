//go:build !linux

package main

import (
	"os/exec"
	"syscall"
)

// detach puts the child in its own process group, so that a terminal's Ctrl-C reaches only the
// launcher. Without Linux's Pdeathsig, children of a launcher that is itself SIGKILLed survive it.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

func pid() int { return syscall.Getpid() }
