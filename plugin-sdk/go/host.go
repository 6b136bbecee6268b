package baton

import (
	"context"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"baton.invalid/baton/pb/hostv1"
)

// LogLevel is how important a line sent to the host's log is.
type LogLevel = hostv1.LogLevel

// The levels of HostClient.Log.
const (
	LogTrace = hostv1.LogLevel_LOG_LEVEL_TRACE
	LogDebug = hostv1.LogLevel_LOG_LEVEL_DEBUG
	LogInfo  = hostv1.LogLevel_LOG_LEVEL_INFO
	LogWarn  = hostv1.LogLevel_LOG_LEVEL_WARN
	LogError = hostv1.LogLevel_LOG_LEVEL_ERROR
)

// HostClient calls the services of the host that launched this plugin
// (baton.host.v1.Host, proto/baton/host/v1/host.proto): log through the host, keep
// keys and values that outlive this process, and emit events. Safe for concurrent use.
type HostClient struct {
	conn *grpc.ClientConn
	rpc  hostv1.HostClient
}

// ConnectHost returns a client of the host services for the host that launched this
// process (BATON_HOST_SOCKET and BATON_PLUGIN_TOKEN). The connection is made lazily,
// on the first call.
func ConnectHost() (*HostClient, error) {
	socket, token := os.Getenv(EnvHostSocket), os.Getenv(EnvToken)
	for name, value := range map[string]string{EnvHostSocket: socket, EnvToken: token} {
		if value == "" {
			return nil, fmt.Errorf("%s is not set: the host services are there only for a plugin started by a baton host", name)
		}
	}
	return DialHost(socket, token)
}

// DialHost returns a client of the host services at socket, calling with token.
func DialHost(socket, token string) (*HostClient, error) {
	if strings.ContainsAny(token, "\r\n") {
		return nil, fmt.Errorf("%s is not a valid token", EnvToken)
	}
	addToken := func(ctx context.Context) context.Context {
		return metadata.AppendToOutgoingContext(ctx, TokenMetadataKey, token)
	}
	// grpc-go sends the plain authority "localhost" for a unix: target, which every
	// server accepts (some refuse a socket path there).
	conn, err := grpc.NewClient("unix:"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(addToken(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(addToken(ctx), desc, cc, method, opts...)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the host services at %s: %w", socket, err)
	}
	return &HostClient{conn: conn, rpc: hostv1.NewHostClient(conn)}, nil
}

// Conn is a connection that adds the launch token to every call: give it to the
// client of a service the embedding program offers, NewMyDbClient(host.Conn()).
func (h *HostClient) Conn() grpc.ClientConnInterface { return h.conn }

// Close closes the connection.
func (h *HostClient) Close() error { return h.conn.Close() }

// Log writes a line to the host's log, tagged with this plugin's name and generation.
func (h *HostClient) Log(ctx context.Context, level LogLevel, message string, fields map[string]string) error {
	_, err := h.rpc.Log(ctx, &hostv1.LogRequest{Level: level, Message: message, Fields: fields})
	return err
}

// KvGet returns the value of key in this plugin's key-value store, and whether it is set.
func (h *HostClient) KvGet(ctx context.Context, key string) ([]byte, bool, error) {
	reply, err := h.rpc.KvGet(ctx, &hostv1.KvGetRequest{Key: key})
	if err != nil {
		return nil, false, err
	}
	return reply.GetValue(), reply.GetFound(), nil
}

// KvPut sets key to value in this plugin's key-value store.
func (h *HostClient) KvPut(ctx context.Context, key string, value []byte) error {
	_, err := h.rpc.KvPut(ctx, &hostv1.KvPutRequest{Key: key, Value: value})
	return err
}

// KvDelete removes key, and says whether it was set.
func (h *HostClient) KvDelete(ctx context.Context, key string) (bool, error) {
	reply, err := h.rpc.KvDelete(ctx, &hostv1.KvDeleteRequest{Key: key})
	if err != nil {
		return false, err
	}
	return reply.GetExisted(), nil
}

// KvList returns every key that starts with prefix, in byte order (fetched page by page).
func (h *HostClient) KvList(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for {
		after := ""
		if len(keys) > 0 {
			after = keys[len(keys)-1]
		}
		page, err := h.rpc.KvList(ctx, &hostv1.KvListRequest{Prefix: prefix, StartAfter: after})
		if err != nil {
			return nil, err
		}
		keys = append(keys, page.GetKeys()...)
		// An empty page that claims more would repeat forever.
		if !page.GetMore() || len(page.GetKeys()) == 0 {
			return keys, nil
		}
	}
}

// EmitEvent publishes an event of kind "plugin:<kind>" on the host's event stream.
func (h *HostClient) EmitEvent(ctx context.Context, kind, message string) error {
	_, err := h.rpc.EmitEvent(ctx, &hostv1.EmitEventRequest{Kind: kind, Message: message})
	return err
}
