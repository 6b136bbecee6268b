package baton

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TokenMetadataKey carries the launch token on every call from the host, and on every
// call to the host services.
const TokenMetadataKey = "x-baton-token"

// healthPrefix names the only service answered without the token: the host checks
// health before it sends any call.
const healthPrefix = "/grpc.health.v1.Health/"

// tokenCheck refuses calls without the launch token, on every service but health.
type tokenCheck struct{ token []byte }

func (t tokenCheck) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, healthPrefix) {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	got := md.Get(TokenMetadataKey)
	if len(got) == 0 {
		return status.Error(codes.Unauthenticated,
			"missing x-baton-token metadata: only the baton host that launched this plugin may call it")
	}
	// Constant time, so the time taken says nothing about the token.
	if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), t.token) != 1 {
		return status.Error(codes.Unauthenticated, "wrong x-baton-token")
	}
	return nil
}

func (t tokenCheck) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := t.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (t tokenCheck) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := t.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// unknownMethod answers a method no service has. It runs behind the stream check, so
// a caller without the token learns nothing, not even which methods exist.
func unknownMethod(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	return status.Errorf(codes.Unimplemented, "this plugin serves no method %s", method)
}
