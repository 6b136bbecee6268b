package baton

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"baton.invalid/baton/pb/pluginv1"
)

// ProtocolVersion is the version of proto/baton/plugin/v1/plugin.proto this SDK speaks.
const ProtocolVersion = 1

// The launch environment the host sets.
const (
	EnvSocket          = "BATON_PLUGIN_SOCKET"
	EnvProtocolVersion = "BATON_PROTOCOL_VERSION"
	EnvToken           = "BATON_PLUGIN_TOKEN"
	EnvHostSocket      = "BATON_HOST_SOCKET"
)

const (
	// maxMessageBytes is the largest message the SDK accepts or sends (Invoke payloads).
	maxMessageBytes = 64 << 20
	// Flow-control windows far above HTTP/2's 64 KiB default, so a state streams
	// through without waiting for window updates.
	streamWindowBytes = 8 << 20
	// stopGrace is how long calls in flight may go on once the plugin is told to
	// stop; the host waits its own grace period and then sends SIGTERM, later SIGKILL.
	stopGrace = 5 * time.Second
)

// Launch is what the host passed in the environment.
type Launch struct {
	// Socket is the Unix socket to bind.
	Socket string
	// HostProtocolVersion is the protocol version the host speaks.
	HostProtocolVersion string
	// Token is the secret every call must carry.
	Token string
}

// LaunchFromEnv reads the launch environment.
func LaunchFromEnv() (Launch, error) {
	var l Launch
	for _, v := range []struct {
		name string
		to   *string
	}{{EnvSocket, &l.Socket}, {EnvProtocolVersion, &l.HostProtocolVersion}, {EnvToken, &l.Token}} {
		*v.to = os.Getenv(v.name)
		if *v.to == "" {
			return Launch{}, fmt.Errorf("%s is not set: this program is a baton plugin and must be started by a baton host (or by `baton check -- <this command>`)", v.name)
		}
	}
	return l, nil
}

// Option changes how Serve and Run serve a plugin.
type Option func(*options)

type options struct {
	register      []func(grpc.ServiceRegistrar)
	workers       int
	serverOptions []grpc.ServerOption
	unary         []grpc.UnaryServerInterceptor
	stream        []grpc.StreamServerInterceptor
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithServices serves application services (from the application's own .proto) on
// the plugin's socket, behind the launch token like every service: register them in
// register as on any *grpc.Server, for example
//
//	baton.WithServices(func(s grpc.ServiceRegistrar) { triggerpb.RegisterTriggerServer(s, t) })
//
// Describe lists them by gRPC name, and the SDK serves gRPC reflection for them.
func WithServices(register func(grpc.ServiceRegistrar)) Option {
	return func(o *options) { o.register = append(o.register, register) }
}

// Serve runs p until the host asks it to stop (or SIGTERM/SIGINT), then exits the
// process: 0 after a clean stop, 2 when not started by a host, 1 on other failures.
// Call it from main. It runs the plugin's Go code on one thread unless [WithWorkers],
// [EnvWorkers] or GOMAXPROCS in the environment ask for more.
//
// Serve keeps stdout for the handshake line alone: before anything else it points
// file descriptor 1 (and os.Stdout) at stderr, so a stray fmt.Println cannot break
// the handshake or pass for protocol output.
func Serve(p Plugin, opts ...Option) {
	initLogging()
	workers, keep, warning := workerCount(os.LookupEnv, collect(opts).workers)
	if warning != "" {
		slog.Warn(warning)
	}
	if !keep {
		runtime.GOMAXPROCS(workers)
	}
	launch, err := LaunchFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	handshake, err := takeStdout()
	if err != nil {
		slog.Error("cannot keep stdout for the handshake line", "error", err)
		os.Exit(1)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if err := Run(ctx, p, launch, handshake, opts...); err != nil {
		slog.Error(err.Error())
		cancel()
		os.Exit(1)
	}
}

// takeStdout returns the process's stdout for the handshake line and points fd 1
// and os.Stdout at stderr.
func takeStdout() (*os.File, error) {
	fd, err := unix.Dup(1)
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(fd)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(fd)
		return nil, err
	}
	os.Stdout = os.Stderr
	return os.NewFile(uintptr(fd), "handshake"), nil
}

// Run binds the launch socket, writes the handshake line to handshake and serves p
// until ctx is done or the host calls Shutdown. Serve is Run for main; Run is for
// tests and for programs that own their process.
func Run(ctx context.Context, p Plugin, launch Launch, handshake io.Writer, opts ...Option) error {
	o := collect(opts)
	if launch.HostProtocolVersion != strconv.Itoa(ProtocolVersion) {
		slog.Warn("the host speaks another protocol version; it will refuse this plugin's handshake",
			"host", launch.HostProtocolVersion, "ours", ProtocolVersion)
	}
	if launch.Token == "" {
		return fmt.Errorf("the launch token (%s) is empty: refusing to serve calls anyone could make", EnvToken)
	}
	// A socket left by a killed predecessor at the same path would make the bind
	// fail; anything else there is not ours to delete.
	if err := claimSocket(launch.Socket); err != nil {
		return err
	}
	lis, err := net.Listen("unix", launch.Socket)
	if err != nil {
		return fmt.Errorf("cannot bind the plugin socket %s: %w", launch.Socket, err)
	}
	// Removed below only while the path still holds this socket, not by Close,
	// which would remove whatever is there by then.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	defer lis.Close()
	info, err := os.Lstat(launch.Socket)
	if err != nil {
		return fmt.Errorf("cannot check the plugin socket %s just bound: %w", launch.Socket, err)
	}
	defer boundSocket{path: launch.Socket, info: info}.remove()
	if err := os.Chmod(launch.Socket, 0o600); err != nil {
		return fmt.Errorf("cannot restrict the plugin socket %s to its owner: %w", launch.Socket, err)
	}

	check := tokenCheck{token: []byte(launch.Token)}
	server, err := newServer(check, o)
	if err != nil {
		return err
	}
	names := &namingRegistrar{ServiceRegistrar: server}
	for _, register := range o.register {
		register(names)
	}
	if len(names.names) > 0 {
		// Lets the host check the services' types against the application's, and
		// `baton ctl call` call them by name; behind the token like the rest. It lists
		// the application's services alone: baton's own service and health are the
		// host's to call, never a client's.
		listed := reflection.ServerOptions{Services: applicationServices{server: server, names: names.names}}
		reflectionv1.RegisterServerReflectionServer(server, reflection.NewServerV1(listed))
		reflectionv1alpha.RegisterServerReflectionServer(server, reflection.NewServer(listed))
	}

	stopped := make(chan string, 1)
	var once sync.Once
	stop := func(reason string) { once.Do(func() { stopped <- reason }) }
	pluginv1.RegisterPluginServer(server, &pluginService{plugin: p, services: names.names, stop: stop})
	healthServer := health.NewServer()
	healthServer.SetServingStatus(pluginv1.Plugin_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, healthServer)

	served := make(chan error, 1)
	go func() { served <- server.Serve(lis) }()
	if _, err := fmt.Fprintf(handshake, "baton|%d|unix|%s\n", ProtocolVersion, launch.Socket); err != nil {
		server.Stop()
		return fmt.Errorf("cannot write the handshake line: %w", err)
	}
	if f, ok := handshake.(*os.File); ok {
		_ = f.Sync()
	}
	slog.Info("serving", "socket", launch.Socket, "workers", runtime.GOMAXPROCS(0))

	select {
	case reason := <-stopped:
		slog.Info(reason + ", shutting down")
	case <-ctx.Done():
		slog.Info("signalled, shutting down", "cause", context.Cause(ctx))
	case err := <-served:
		return fmt.Errorf("the plugin's gRPC server failed: %w", err)
	}
	healthServer.Shutdown()
	graceful := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(graceful)
	}()
	select {
	case <-graceful:
	case <-time.After(stopGrace):
		slog.Warn("calls still running after the grace period; stopping anyway", "grace", stopGrace)
		server.Stop()
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("the plugin's gRPC server failed: %w", err)
	}
	slog.Info("stopped")
	return nil
}

// namingRegistrar notes the names of the services registered through it, for Describe.
type namingRegistrar struct {
	grpc.ServiceRegistrar
	names []string
}

func (n *namingRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	n.names = append(n.names, desc.ServiceName)
	n.ServiceRegistrar.RegisterService(desc, impl)
}

// applicationServices is what reflection lists: the services registered through
// WithServices, which Describe lists too.
type applicationServices struct {
	server *grpc.Server
	names  []string
}

func (a applicationServices) GetServiceInfo() map[string]grpc.ServiceInfo {
	all := a.server.GetServiceInfo()
	listed := make(map[string]grpc.ServiceInfo, len(a.names))
	for _, name := range a.names {
		if info, ok := all[name]; ok {
			listed[name] = info
		}
	}
	return listed
}
