package main

import (
	"bytes"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestReadmeIsCurrent fails when README.md's environment table differs from the code; fix it with
// `make reference`.
func TestReadmeIsCurrent(t *testing.T) {
	doc, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	tab, err := table()
	if err != nil {
		t.Fatal(err)
	}
	want, err := splice(doc, tab)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(doc, want) {
		t.Fatal("README.md's environment reference is out of date: run `make reference`")
	}
}

func TestSpliceNeedsMarkers(t *testing.T) {
	if _, err := splice([]byte("no markers"), []byte("x")); err == nil {
		t.Fatal("want an error")
	}
}
