// Package faults holds the fault scenarios of the resilience package: real server processes
// (./server, built by the tests) and in-process servers behind discovery/lb and the resilience chain,
// under open-loop load on 127.0.0.1. Each scenario logs its figure; run them with
//
//	go test -v -run Scenario ./examples/faults/
//
// They take about a minute and are skipped with -short.
package faults
