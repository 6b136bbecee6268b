package main

import (
	"context"
	"testing"
)

// The committed stubs are what the committed protos generate: a change to a .proto
// without `go run .` here fails this test, in CI and for whoever runs go test.
func TestCommittedStubsMatchTheProtos(t *testing.T) {
	files, err := generate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 6 {
		t.Fatalf("expected 6 stub files (3 protos x 2 plugins), got %d", len(files))
	}
	if stale := compare(files); len(stale) > 0 {
		t.Fatalf("stale stubs: %v; run `go run .` in plugin-sdk/go/tools/protogen", stale)
	}
}
