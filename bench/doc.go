// Package bench holds Chassis' benchmarks beside its peers (bare net/http, go-kit, go-zero, Kratos,
// raw failsafe-go, otelhttp). It is its own module so that peer libraries never enter the library's
// dependencies. Results and the commands that produced them are in ../BENCHMARKS.md.
package bench
