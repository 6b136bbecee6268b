package baton

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"baton.invalid/baton/pb/pluginv1"
)

// seen records the methods an interceptor was called for.
type seen struct {
	mu      sync.Mutex
	methods []string
}

func (s *seen) add(method string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.methods = append(s.methods, method)
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.methods...)
}

func TestInterceptorsRunInOrderAfterTheTokenCheck(t *testing.T) {
	var order, streams seen
	first := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		order.add("first " + info.FullMethod)
		return h(ctx, req)
	}
	// An interceptor of the plugin's own: refuses one method before the plugin sees it.
	second := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		order.add("second " + info.FullMethod)
		if r, ok := req.(*pluginv1.InvokeRequest); ok && r.GetMethod() == "set" {
			return nil, status.Error(codes.PermissionDenied, "read-only")
		}
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		streams.add(info.FullMethod)
		return h(srv, ss)
	}
	r := start(t, &memo{}, WithUnaryInterceptor(first), WithUnaryInterceptor(second), WithStreamInterceptor(stream))

	if _, err := r.client.Invoke(context.Background(), &pluginv1.InvokeRequest{Method: "get"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without the token: %v, want Unauthenticated", err)
	}
	if s, err := r.client.Snapshot(context.Background(), &pluginv1.SnapshotRequest{}); err == nil {
		if _, err := s.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("a stream without the token: %v, want Unauthenticated", err)
		}
	}
	if got := append(order.list(), streams.list()...); len(got) != 0 {
		t.Fatalf("the interceptors saw calls without the token: %v", got)
	}

	if _, err := r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "set", Payload: []byte("x")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("set through the refusing interceptor: %v, want PermissionDenied", err)
	}
	if out, err := r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "get"}); err != nil || len(out.GetPayload()) != 0 {
		t.Fatalf("get: %v, %v (the refused set must not have reached the plugin)", out, err)
	}
	const invoke = "/baton.plugin.v1.Plugin/Invoke"
	want := []string{"first " + invoke, "second " + invoke, "first " + invoke, "second " + invoke}
	if got := order.list(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("unary interceptors ran as %v, want %v", got, want)
	}
	snapshot(t, r)
	if got := streams.list(); len(got) != 1 || got[0] != "/baton.plugin.v1.Plugin/Snapshot" {
		t.Fatalf("the stream interceptor saw %v", got)
	}
}

func TestServerOptionsReachTheServer(t *testing.T) {
	r := start(t, &memo{}, WithServerOptions(grpc.MaxRecvMsgSize(1024)))
	_, err := r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "set", Payload: make([]byte, 2048)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("2 KiB past a 1 KiB MaxRecvMsgSize: %v, want ResourceExhausted", err)
	}
	if _, err := r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "set", Payload: make([]byte, 512)}); err != nil {
		t.Fatalf("512 bytes: %v", err)
	}
}

func TestAnInterceptorThatWouldRunBeforeTheTokenCheckIsRefused(t *testing.T) {
	pass := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	passStream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, ss)
	}
	for name, opt := range map[string]grpc.ServerOption{
		"grpc.UnaryInterceptor":  grpc.UnaryInterceptor(pass),
		"grpc.StreamInterceptor": grpc.StreamInterceptor(passStream),
	} {
		socket := filepath.Join(t.TempDir(), "p.sock")
		launch := Launch{Socket: socket, HostProtocolVersion: "1", Token: "secret-token"}
		// Done from the start: a Run that wrongly accepts the option returns nil at once.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := Run(ctx, &memo{}, launch, io.Discard, WithServerOptions(opt))
		if err == nil || !strings.Contains(err.Error(), "baton.WithUnaryInterceptor") {
			t.Errorf("%s in WithServerOptions: Run returned %v, want a refusal naming WithUnaryInterceptor", name, err)
		}
		if _, err := os.Lstat(socket); !os.IsNotExist(err) {
			t.Errorf("%s: the socket is left behind (%v)", name, err)
		}
	}
}
