package baton

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Description is what a plugin tells the host about itself in Describe.
type Description struct {
	// Name is the plugin's own name (informational; the host's config names it).
	Name string
	// Version is the build's version, free-form.
	Version string
	// StateSchemaVersion is the state format written by Snapshot and read by
	// Restore; 0 for a plugin that keeps no state.
	StateSchemaVersion uint32
	// Methods are the methods Invoke accepts.
	Methods []Method
}

// Method is one method a plugin accepts in Invoke.
type Method struct {
	Name string
	// Description is one line about the method and its payload.
	Description string
}

// Plugin is a baton plugin. One value serves every call, from many goroutines at
// once, so keep state behind your own lock.
//
// Errors returned by Invoke, Snapshot and Restore reach the caller as gRPC statuses:
// return status.Error(codes.Unimplemented, ...) for an unknown method and
// codes.InvalidArgument for a bad payload; any other error is sent as Internal.
type Plugin interface {
	// Describe says who the plugin is and what methods it offers.
	Describe() Description
	// Invoke runs one call.
	Invoke(ctx context.Context, method string, payload []byte) ([]byte, error)
	// Snapshot returns a consistent copy of the whole state, in the format of
	// Describe().StateSchemaVersion. The host sends no calls while it takes one.
	Snapshot(ctx context.Context) ([]byte, error)
	// Restore replaces the state with state, written by some build in format
	// schemaVersion. Refuse a format you cannot read with codes.FailedPrecondition,
	// leaving the current state untouched.
	Restore(ctx context.Context, schemaVersion uint32, state []byte) error
}

// StateStreamer is implemented, beside Plugin, by a plugin whose state is too large
// to hold twice in memory. The SDK then uses these methods instead of Snapshot and
// Restore, and the state moves through in 64 KiB chunks.
type StateStreamer interface {
	// SnapshotStream returns a reader of a consistent copy of the whole state, and
	// its length in bytes if known (-1 if not; a known length is announced to the
	// receiver, which then refuses a stream of another length). The SDK closes the
	// reader when the snapshot has been sent or has failed.
	SnapshotStream(ctx context.Context) (state io.ReadCloser, size int64, err error)
	// RestoreStream reads a state written in format schemaVersion from r (size is
	// its announced length, or -1). Each chunk is checked before its data reaches
	// r; a broken stream makes r return an error. Only io.EOF means the whole state
	// arrived with a good checksum: commit it then, and not before, so that a
	// refused restore leaves the current state untouched.
	RestoreStream(ctx context.Context, schemaVersion uint32, r io.Reader, size int64) error
}

// Stateless provides Snapshot and Restore for a plugin that keeps no state: embed it.
type Stateless struct{}

// Snapshot returns an empty state.
func (Stateless) Snapshot(context.Context) ([]byte, error) { return nil, nil }

// Restore accepts an empty state only.
func (Stateless) Restore(_ context.Context, schemaVersion uint32, state []byte) error {
	if len(state) == 0 {
		return nil
	}
	return status.Errorf(codes.FailedPrecondition,
		"this plugin keeps no state, but was given %d bytes in schema version %d", len(state), schemaVersion)
}

// asStatus turns a plugin's error into the status its caller gets.
func asStatus(what string, err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	if ctxErr := status.FromContextError(err); ctxErr.Code() != codes.Unknown {
		return ctxErr.Err()
	}
	return status.Error(codes.Internal, fmt.Sprintf("the plugin's %s failed: %v", what, err))
}
