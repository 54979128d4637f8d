//go:build unix

package auth

import "syscall"

const openNonBlock = syscall.O_NONBLOCK
