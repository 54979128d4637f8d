//go:build !unix

package config

const oNonBlock = 0
