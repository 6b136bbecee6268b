package baton

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOnlyAStaleSocketIsClaimed(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	lis, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	lis.Close()
	live := filepath.Join(dir, "live.sock")
	listening, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer listening.Close()
	file := filepath.Join(dir, "precious.txt")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path, refusal string
		left                bool
	}{
		{"nothing there", filepath.Join(dir, "free.sock"), "", false},
		{"a stale socket", stale, "", false},
		{"a live socket", live, "another process is listening", true},
		{"a regular file", file, "is a regular file, not a socket", true},
		{"a directory", dir, "is a directory, not a socket", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := claimSocket(tc.path)
			switch {
			case tc.refusal == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal) || !strings.Contains(err.Error(), tc.path)):
				t.Fatalf("got %v, want an error naming %s that says %q", err, tc.path, tc.refusal)
			}
			if _, err := os.Lstat(tc.path); (err == nil) != tc.left {
				t.Fatalf("left in place: %v, want %v", err == nil, tc.left)
			}
		})
	}
}
