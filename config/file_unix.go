//go:build unix

package config

import "syscall"

const oNonBlock = syscall.O_NONBLOCK
