// The go-kv example plugin: a key-value store that serves its application's own gRPC
// API (kv.v1.KV, proto/kv/v1/kv.proto) with the Go SDK, the way a plugin written for
// HashiCorp's go-plugin serves the same .proto, and keeps its data as baton state, so
// a reload to a new build hands the data over. docs/migrating-from-go-plugin.md walks
// through the port.
package main

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"baton.invalid/baton"
	"baton.invalid/examples/go-kv/kvpb"
)

// store is both the application's KV service and a baton plugin: one value, so that
// Snapshot sees exactly the data Put wrote.
type store struct {
	kvpb.UnimplementedKVServer

	mu   sync.RWMutex
	data map[string][]byte
}

func newStore() *store { return &store{data: map[string][]byte{}} }

func (s *store) Get(_ context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	if req.GetKey() == "" {
		return nil, status.Error(codes.InvalidArgument, "the key must not be empty")
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	value, ok := s.data[req.GetKey()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no value under %q", req.GetKey())
	}
	return &kvpb.GetResponse{Value: value}, nil
}

func (s *store) Put(_ context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if req.GetKey() == "" {
		return nil, status.Error(codes.InvalidArgument, "the key must not be empty")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	value := req.GetValue()
	if value == nil {
		// Stored as empty, not absent: the state then says "" for it, not null.
		value = []byte{}
	}
	s.data[req.GetKey()] = value
	return &kvpb.PutResponse{}, nil
}

func (s *store) Describe() baton.Description {
	// No Invoke methods: everything goes through kv.v1.KV, which Describe lists
	// because WithServices registered it.
	return baton.Description{Name: "go-kv", Version: "0.1.0", StateSchemaVersion: stateSchema}
}

func (s *store) Invoke(_ context.Context, method string, _ []byte) ([]byte, error) {
	return nil, status.Errorf(codes.Unimplemented,
		"go-kv has no Invoke method %q: call its service kv.v1.KV (Get, Put)", method)
}

func (s *store) Snapshot(context.Context) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return encode(s.data)
}

func (s *store) Restore(_ context.Context, schema uint32, state []byte) error {
	if schema != stateSchema {
		return status.Errorf(codes.FailedPrecondition, "go-kv reads state schema %d, was given schema %d", stateSchema, schema)
	}
	// Decoded in full before anything changes: a refused state leaves ours as it was.
	data, err := decode(state)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = data
	return nil
}

func main() {
	s := newStore()
	baton.Serve(s, baton.WithServices(func(r grpc.ServiceRegistrar) { kvpb.RegisterKVServer(r, s) }))
}
