// go-plugin-peer: the go-plugin peer for baton-bench's `peers` scenario. One binary, two
// roles: run with no argument it is the host, and `go-plugin-peer plugin` (which the
// host starts through go-plugin, gRPC mode) is the plugin. The plugin serves one unary
// method that echoes its bytes back; the host starts it the way any go-plugin host
// does (plugin.NewClient, Client, Dispense) and then takes commands on stdin, one per
// line, answering each with one JSON line on stdout, so that the Rust benchmark can
// interleave its rounds with the other paths' and read the figures:
//
//	(at start)                  {"ready":true,"client":HOST_PID,"server":PLUGIN_PID}
//	latency SIZE COUNT          {"us":[...]}            COUNT sequential calls, µs each
//	rate CALLERS SIZE MILLIS    {"calls":N,"secs":S}    CALLERS goroutines for MILLIS
//	quit (or end of input)      the plugin is stopped and the host exits
//
// A failure answers {"error":"..."} and the host exits with status 1.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The handshake both roles share; go-plugin refuses a plugin whose cookie differs.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BATON_BENCH_GO_PLUGIN_PEER",
	MagicCookieValue: "echo",
}

const echoMethod = "/baton.bench.peer.v1.Echo/Echo"

// Echoer is what the host dispenses and the plugin implements.
type Echoer interface {
	Echo(ctx context.Context, payload []byte) ([]byte, error)
}

// echoServer is the gRPC service the plugin registers. The messages are protobuf's
// well-known BytesValue, so no generated code is needed.
type echoServer interface {
	echo(ctx context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error)
}

type echoImpl struct{}

func (echoImpl) echo(_ context.Context, in *wrapperspb.BytesValue) (*wrapperspb.BytesValue, error) {
	return &wrapperspb.BytesValue{Value: in.GetValue()}, nil
}

func echoHandler(srv any, ctx context.Context, decode func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.BytesValue)
	if err := decode(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(echoServer).echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: echoMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return srv.(echoServer).echo(ctx, req.(*wrapperspb.BytesValue))
	})
}

var echoService = grpc.ServiceDesc{
	ServiceName: "baton.bench.peer.v1.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Metadata:    "go-plugin-peer",
}

// echoClient is the host's side: a unary call on go-plugin's connection.
type echoClient struct{ conn *grpc.ClientConn }

func (c echoClient) Echo(ctx context.Context, payload []byte) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := c.conn.Invoke(ctx, echoMethod, &wrapperspb.BytesValue{Value: payload}, out); err != nil {
		return nil, err
	}
	return out.GetValue(), nil
}

// echoPlugin is the go-plugin glue, gRPC only.
type echoPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (echoPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&echoService, echoImpl{})
	return nil
}

func (echoPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return echoClient{conn: c}, nil
}

var plugins = plugin.PluginSet{"echo": echoPlugin{}}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "plugin" {
		go exitWithHost(os.Getppid())
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: handshake,
			Plugins:         plugins,
			GRPCServer:      plugin.DefaultGRPCServer,
		})
		return
	}
	os.Exit(host())
}

// exitWithHost ends the plugin once its host has gone (the plugin is re-parented): a
// host killed outright, as when the benchmark is, never gets to stop it, and go-plugin
// leaves stopping it to the host.
func exitWithHost(host int) {
	for range time.Tick(200 * time.Millisecond) {
		if os.Getppid() != host {
			os.Exit(0)
		}
	}
}

func host() int {
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		_ = out.Encode(map[string]string{"error": err.Error()})
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		return fail(fmt.Errorf("cannot find this program: %w", err))
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		Plugins:          plugins,
		Cmd:              exec.Command(self, "plugin"),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "go-plugin-peer",
			Level:  hclog.Warn,
			Output: os.Stderr,
		}),
	})
	defer client.Kill()
	protocol, err := client.Client()
	if err != nil {
		return fail(fmt.Errorf("cannot start the plugin: %w", err))
	}
	raw, err := protocol.Dispense("echo")
	if err != nil {
		return fail(fmt.Errorf("cannot dispense echo: %w", err))
	}
	echo := raw.(Echoer)
	pid := 0
	if rc := client.ReattachConfig(); rc != nil {
		pid = rc.Pid
	}
	for range 200 {
		if _, err := echo.Echo(context.Background(), []byte("warm")); err != nil {
			return fail(fmt.Errorf("warm-up call: %w", err))
		}
	}
	if err := out.Encode(map[string]any{"ready": true, "client": os.Getpid(), "server": pid}); err != nil {
		return 1
	}

	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		words := strings.Fields(lines.Text())
		if len(words) == 0 {
			continue
		}
		var answer any
		switch {
		case words[0] == "quit":
			return 0
		case words[0] == "latency" && len(words) == 3:
			size, count, err := numbers(words[1], words[2])
			if err != nil {
				return fail(err)
			}
			us, err := latency(echo, size, count)
			if err != nil {
				return fail(err)
			}
			answer = map[string]any{"us": us}
		case words[0] == "rate" && len(words) == 4:
			callers, size, err := numbers(words[1], words[2])
			if err != nil {
				return fail(err)
			}
			millis, err := strconv.Atoi(words[3])
			if err != nil || millis <= 0 || millis > 600_000 {
				return fail(fmt.Errorf("bad window %q", words[3]))
			}
			calls, secs, err := rate(echo, callers, size, time.Duration(millis)*time.Millisecond)
			if err != nil {
				return fail(err)
			}
			answer = map[string]any{"calls": calls, "secs": secs}
		default:
			return fail(fmt.Errorf("unknown command %q", lines.Text()))
		}
		if err := out.Encode(answer); err != nil {
			return 1
		}
	}
	return 0
}

// numbers parses two positive counts of at most 1<<26.
func numbers(a, b string) (int, int, error) {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	if errA != nil || errB != nil || x <= 0 || y <= 0 || x > 1<<26 || y > 1<<26 {
		return 0, 0, fmt.Errorf("bad numbers %q %q", a, b)
	}
	return x, y, nil
}

// latency makes count sequential calls with a size-byte payload; µs per call.
func latency(echo Echoer, size, count int) ([]float64, error) {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 0x5a
	}
	times := make([]float64, 0, count)
	for range count {
		t := time.Now()
		answer, err := echo.Echo(context.Background(), payload)
		elapsed := time.Since(t)
		if err != nil {
			return nil, err
		}
		if len(answer) != size {
			return nil, fmt.Errorf("echoed %d bytes, not %d", len(answer), size)
		}
		times = append(times, float64(elapsed.Nanoseconds())/1e3)
	}
	return times, nil
}

// rate runs callers goroutines calling without pause for window (each stops at the
// window's end, and no later than 3 × window should the clock be odd).
func rate(echo Echoer, callers, size int, window time.Duration) (uint64, float64, error) {
	payload := make([]byte, size)
	var total atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	start := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var calls uint64
			for !stop.Load() && time.Since(start) < 3*window {
				if _, err := echo.Echo(context.Background(), payload); err != nil {
					errs <- err
					break
				}
				calls++
			}
			total.Add(calls)
		}()
	}
	time.Sleep(window)
	stop.Store(true)
	wg.Wait()
	secs := time.Since(start).Seconds()
	select {
	case err := <-errs:
		return 0, 0, err
	default:
	}
	return total.Load(), secs, nil
}
