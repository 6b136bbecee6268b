// The counter example plugin in Go: named counters you can incr and get, whose state
// survives handovers, in the Rust and Python counters' state format (../counter/STATE.md),
// so a snapshot of any of them restores into any other.
package main

import (
	"context"
	"math"
	"strconv"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"baton.invalid/baton"
)

type counter struct {
	mu     sync.Mutex
	counts map[string]int64
}

func (c *counter) Describe() baton.Description {
	return baton.Description{
		Name:               "go-counter",
		Version:            "0.1.0",
		StateSchemaVersion: stateSchema,
		Methods: []baton.Method{
			{Name: "incr", Description: "adds one to the counter named by the payload; returns the new value"},
			{Name: "get", Description: "returns the value of the counter named by the payload (0 if unset)"},
		},
	}
}

func keyOf(payload []byte) (string, error) {
	switch {
	case len(payload) == 0:
		return "", status.Error(codes.InvalidArgument, "the payload must be a counter name, got nothing")
	case !utf8.Valid(payload):
		return "", status.Error(codes.InvalidArgument, "the counter name must be UTF-8")
	}
	return string(payload), nil
}

func (c *counter) Invoke(_ context.Context, method string, payload []byte) ([]byte, error) {
	if method != "incr" && method != "get" {
		return nil, status.Errorf(codes.Unimplemented, "counter has no method %q (it has incr, get)", method)
	}
	key, err := keyOf(payload)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	value := c.counts[key]
	if method == "incr" {
		if value == math.MaxInt64 {
			return nil, status.Errorf(codes.OutOfRange, "the counter %q is at its maximum", key)
		}
		value++
		c.counts[key] = value
	}
	return strconv.AppendInt(nil, value, 10), nil
}

func (c *counter) Snapshot(context.Context) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return encode(c.counts), nil
}

func (c *counter) Restore(_ context.Context, schema uint32, state []byte) error {
	if schema != stateSchema {
		return status.Errorf(codes.FailedPrecondition, "counter reads state schema %d, was given schema %d", stateSchema, schema)
	}
	counts, err := decode(state)
	if err != nil {
		// InvalidArgument, as the Rust and Python counters answer a malformed state.
		return status.Error(codes.InvalidArgument, err.Error())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts = counts
	return nil
}

func main() {
	baton.Serve(&counter{counts: map[string]int64{}})
}
