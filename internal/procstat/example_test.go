package procstat_test

import (
	"fmt"
	"net"

	"github.com/cloudchassis/kit/internal/procstat"
)

// Count the connections a server holds open: one client connected.
func ExampleEstablished() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		panic(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		panic(err)
	}
	defer s.Close()
	n, err := procstat.Established(ln.Addr().(*net.TCPAddr).Port)
	fmt.Println(n, err)
	// Output: 1 <nil>
}
