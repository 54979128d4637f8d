package haproxy_test

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/cloudchassis/kit/deploy/haproxy"
)

func ExampleConfig_Write() {
	var b bytes.Buffer
	err := haproxy.Config{Listen: "0.0.0.0:80", DNS: "127.0.0.1:8600", Service: "shop"}.Write(&b)
	if err != nil {
		panic(err)
	}
	for line := range strings.Lines(b.String()) {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "server-template") || strings.HasPrefix(l, "timeout resolve") || strings.HasPrefix(l, "nameserver") {
			fmt.Println(l)
		}
	}
	// Output:
	// nameserver consul 127.0.0.1:8600
	// timeout resolve 1000ms
	// server-template app 10 _shop._tcp.service.consul resolvers consul resolve-prefer ipv4 init-addr none check inter 1s fall 1 rise 1
}
