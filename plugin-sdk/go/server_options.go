package baton

import (
	"fmt"

	"google.golang.org/grpc"
)

// WithServerOptions adds options to the plugin's *grpc.Server, as go-plugin's
// ServeConfig.GRPCServer let a plugin build its server: keepalive, message size
// limits (the SDK's 64 MiB default stays unless an option here sets another), stats
// handlers, and so on. Interceptors go through [WithUnaryInterceptor] and
// [WithStreamInterceptor]: grpc.UnaryInterceptor and grpc.StreamInterceptor here are
// refused (Run returns an error), since the single interceptor they set is the SDK's
// token check, which runs before anything else. Transport credentials have no place
// here either: the host speaks plain gRPC on the plugin's Unix socket.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.serverOptions = append(o.serverOptions, opts...) }
}

// WithUnaryInterceptor adds unary interceptors, chained in order after the SDK's
// token check: they see every call that carries the launch token, the SDK's own
// (baton.plugin.v1.Plugin, reflection) and the application's (info.FullMethod says
// which), and health checks, which need no token.
func WithUnaryInterceptor(interceptors ...grpc.UnaryServerInterceptor) Option {
	return func(o *options) { o.unary = append(o.unary, interceptors...) }
}

// WithStreamInterceptor adds stream interceptors, chained in order after the SDK's
// token check, on the same calls as [WithUnaryInterceptor]'s.
func WithStreamInterceptor(interceptors ...grpc.StreamServerInterceptor) Option {
	return func(o *options) { o.stream = append(o.stream, interceptors...) }
}

// newServer makes the plugin's gRPC server: the SDK's defaults, then the plugin's
// options, then what the SDK cannot give up (the token check first on every call,
// the answer to unknown methods behind it).
func newServer(check tokenCheck, o options) (server *grpc.Server, err error) {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
		grpc.InitialWindowSize(streamWindowBytes),
		grpc.InitialConnWindowSize(2 * streamWindowBytes),
	}
	opts = append(opts, o.serverOptions...)
	opts = append(opts,
		// grpc runs the one interceptor set by grpc.UnaryInterceptor before every
		// chained one, and panics if a second option sets it: taking that slot puts
		// the check first, and makes a plugin's own grpc.UnaryInterceptor fail loudly
		// rather than run before it.
		grpc.UnaryInterceptor(check.unary),
		grpc.StreamInterceptor(check.stream),
		grpc.ChainUnaryInterceptor(o.unary...),
		grpc.ChainStreamInterceptor(o.stream...),
		grpc.UnknownServiceHandler(unknownMethod),
	)
	defer func() {
		// grpc.NewServer applies the options before it makes or starts anything, so
		// nothing is left behind by its panic.
		if p := recover(); p != nil {
			server, err = nil, fmt.Errorf("the plugin's gRPC server options conflict with the SDK's (%v): "+
				"pass interceptors with baton.WithUnaryInterceptor or baton.WithStreamInterceptor, "+
				"not grpc.UnaryInterceptor or grpc.StreamInterceptor in baton.WithServerOptions", p)
		}
	}()
	return grpc.NewServer(opts...), nil
}
