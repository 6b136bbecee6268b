package baton

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
)

// claimSocket makes path free to bind, under the host's rule: nothing is there, or a
// socket nobody answers on (left by a plugin that was killed), which is removed.
// Anything else is left as it is and named in the error.
func claimSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot check the plugin socket path %s: %w", path, err)
	}
	if info.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("the plugin socket path %s is %s, not a socket; only a stale socket is ever replaced, so nothing was deleted: the host must be given a path that is free",
			path, describeMode(info.Mode()))
	}
	conn, err := net.Dial("unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("the plugin socket path %s is a socket another process is listening on; it was left alone", path)
	}
	// Refused: the socket file outlived its listener. Anything else (permission
	// denied, ...) is not ours to judge.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether the socket at the plugin socket path %s is stale: %w", path, err)
	}
	boundSocket{path: path, info: info}.remove()
	return nil
}

// describeMode says what kind of file a mode is, for the refusal.
func describeMode(mode fs.FileMode) string {
	switch mode.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a FIFO"
	case fs.ModeDevice:
		return "a block device"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "a character device"
	default:
		return "a file of an unknown kind"
	}
}

// boundSocket is the socket file a listener was bound to, removed only while the path
// still holds that very file: a later plugin may have bound its own there since.
type boundSocket struct {
	path string
	info fs.FileInfo
}

func (b boundSocket) remove() {
	now, err := os.Lstat(b.path)
	if err == nil && now.Mode().Type() == fs.ModeSocket && os.SameFile(now, b.info) {
		_ = os.Remove(b.path)
	}
}
