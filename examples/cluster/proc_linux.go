package main

import (
	"os/exec"
	"syscall"
)

// detach puts the child in its own process group, so that a terminal's Ctrl-C reaches only the
// launcher (which then stops the children in order), and asks the kernel to SIGKILL the child if the
// launcher dies without cleaning up, so that no instance outlives it.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func pid() int { return syscall.Getpid() }
