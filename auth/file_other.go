//go:build !unix

package auth

const openNonBlock = 0
