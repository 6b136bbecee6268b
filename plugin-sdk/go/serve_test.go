package baton

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"baton.invalid/baton/pb/pluginv1"
)

// memo keeps one byte string, set by "set" and read by "get".
type memo struct {
	mu    sync.Mutex
	state []byte
}

func (m *memo) Describe() Description {
	return Description{Name: "memo", Version: "test", StateSchemaVersion: 3,
		Methods: []Method{{Name: "set"}, {Name: "get"}}}
}

func (m *memo) Invoke(_ context.Context, method string, payload []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch method {
	case "set":
		m.state = bytes.Clone(payload)
		return nil, nil
	case "get":
		return m.state, nil
	case "fail":
		return nil, errors.New("plain error")
	}
	return nil, status.Errorf(codes.Unimplemented, "memo has no method %q", method)
}

func (m *memo) Snapshot(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.state), nil
}

func (m *memo) Restore(_ context.Context, schema uint32, state []byte) error {
	if schema != 3 {
		return status.Errorf(codes.FailedPrecondition, "memo reads schema 3, got %d", schema)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.state = state
	return nil
}

// streamedMemo is memo with its state moved through StateStreamer.
type streamedMemo struct{ memo }

func (m *streamedMemo) SnapshotStream(context.Context) (io.ReadCloser, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return io.NopCloser(bytes.NewReader(bytes.Clone(m.state))), int64(len(m.state)), nil
}

func (m *streamedMemo) RestoreStream(_ context.Context, schema uint32, r io.Reader, _ int64) error {
	state, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return m.Restore(context.Background(), schema, state)
}

// running is one plugin served by Run on a socket in a temp dir, in this process.
type running struct {
	client pluginv1.PluginClient
	conn   *grpc.ClientConn
	token  string
	done   chan error
	cancel context.CancelFunc
	line   string
}

func start(t *testing.T, p Plugin, opts ...Option) *running {
	t.Helper()
	launch := Launch{Socket: filepath.Join(t.TempDir(), "p.sock"), HostProtocolVersion: "1", Token: "secret-token"}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	r := &running{token: launch.Token, done: make(chan error, 1), cancel: cancel}
	go func() { r.done <- Run(ctx, p, launch, pw, opts...) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	r.line = strings.TrimSuffix(line, "\n")
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	conn, err := grpc.NewClient("unix:"+launch.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r.conn, r.client = conn, pluginv1.NewPluginClient(conn)
	t.Cleanup(func() {
		cancel()
		conn.Close()
		<-r.done
	})
	return r
}

func (r *running) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), TokenMetadataKey, r.token)
}

func TestServesTheContractBehindTheToken(t *testing.T) {
	r := start(t, &memo{})
	if !strings.HasPrefix(r.line, "baton|1|unix|") || !strings.HasSuffix(r.line, "p.sock") {
		t.Fatalf("handshake line %q", r.line)
	}
	health, err := healthpb.NewHealthClient(r.conn).Check(context.Background(),
		&healthpb.HealthCheckRequest{Service: "baton.plugin.v1.Plugin"})
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: %v, %v", health, err)
	}

	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{
		{"no token", context.Background()},
		{"wrong token", metadata.AppendToOutgoingContext(context.Background(), TokenMetadataKey, "secret-tokem")},
	} {
		_, err := r.client.Describe(tc.ctx, &pluginv1.DescribeRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: Describe gave %v, want Unauthenticated", tc.name, err)
		}
		stream, err := r.client.Snapshot(tc.ctx, &pluginv1.SnapshotRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: Snapshot gave %v, want Unauthenticated", tc.name, err)
		}
		err = r.conn.Invoke(tc.ctx, "/no.such.Service/Method", &pluginv1.DescribeRequest{}, &pluginv1.DescribeResponse{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: an unknown method gave %v, want Unauthenticated", tc.name, err)
		}
	}
	err = r.conn.Invoke(r.ctx(), "/no.such.Service/Method", &pluginv1.DescribeRequest{}, &pluginv1.DescribeResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("an unknown method with the token gave %v, want Unimplemented", err)
	}

	d, err := r.client.Describe(r.ctx(), &pluginv1.DescribeRequest{})
	if err != nil || d.GetName() != "memo" || d.GetProtocolVersion() != 1 || d.GetStateSchemaVersion() != 3 || len(d.GetMethods()) != 2 {
		t.Fatalf("Describe: %v, %v", d, err)
	}
	_, err = r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "nope"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), `memo has no method "nope"`) {
		t.Errorf("unknown method: %v", err)
	}
	_, err = r.client.Invoke(r.ctx(), &pluginv1.InvokeRequest{Method: "fail"})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "the plugin's invoke failed: plain error") {
		t.Errorf("a plain error: %v", err)
	}
}

// snapshot reads a whole Snapshot stream.
func snapshot(t *testing.T, r *running) []*pluginv1.StateChunk {
	t.Helper()
	stream, err := r.client.Snapshot(r.ctx(), &pluginv1.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var chunks []*pluginv1.StateChunk
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return chunks
		}
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
	}
}

func restore(r *running, chunks []*pluginv1.StateChunk) (*pluginv1.RestoreResponse, error) {
	stream, err := r.client.Restore(r.ctx())
	if err != nil {
		return nil, err
	}
	for _, c := range chunks {
		if err := stream.Send(c); err != nil {
			break // the server answered early; CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}

func TestStateMovesBetweenProcessesBothWays(t *testing.T) {
	state := bytes.Repeat([]byte("0123456789abcdef"), 3*ChunkSize/16+5) // 3 chunks and a bit
	for _, tc := range []struct {
		name     string
		from, to Plugin
	}{
		{"bytes", &memo{}, &memo{}},
		{"streamed", &streamedMemo{}, &streamedMemo{}},
		{"bytes to streamed", &memo{}, &streamedMemo{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			from, to := start(t, tc.from), start(t, tc.to)
			if _, err := from.client.Invoke(from.ctx(), &pluginv1.InvokeRequest{Method: "set", Payload: state}); err != nil {
				t.Fatal(err)
			}
			chunks := snapshot(t, from)
			if len(chunks) != 4 || chunks[0].GetTotalBytes() != uint64(len(state)) || !chunks[3].GetLast() {
				t.Fatalf("%d chunks, first announces %d", len(chunks), chunks[0].GetTotalBytes())
			}

			// Refused streams leave the state as it was.
			if _, err := to.client.Invoke(to.ctx(), &pluginv1.InvokeRequest{Method: "set", Payload: []byte("kept")}); err != nil {
				t.Fatal(err)
			}
			corrupt := make([]*pluginv1.StateChunk, len(chunks))
			copy(corrupt, chunks)
			last := proto.Clone(chunks[3]).(*pluginv1.StateChunk)
			last.Checksum ^= 1
			corrupt[3] = last
			if _, err := restore(to, corrupt); status.Code(err) != codes.DataLoss {
				t.Errorf("a bad checksum: %v, want DataLoss", err)
			}
			if _, err := restore(to, []*pluginv1.StateChunk{chunks[1], chunks[0]}); status.Code(err) != codes.DataLoss {
				t.Errorf("out of order: %v, want DataLoss", err)
			}
			if _, err := restore(to, chunks[:2]); status.Code(err) != codes.DataLoss {
				t.Errorf("truncated: %v, want DataLoss", err)
			}
			wrongSchema := Chunks(9, []byte("x"), 0)
			if _, err := restore(to, wrongSchema); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("schema 9: %v, want FailedPrecondition", err)
			}
			got, _ := to.client.Invoke(to.ctx(), &pluginv1.InvokeRequest{Method: "get"})
			if string(got.GetPayload()) != "kept" {
				t.Fatalf("a refused restore changed the state to %q", got.GetPayload())
			}

			reply, err := restore(to, chunks)
			if err != nil || reply.GetBytesRestored() != uint64(len(state)) {
				t.Fatalf("restore: %v, %v", reply, err)
			}
			got, _ = to.client.Invoke(to.ctx(), &pluginv1.InvokeRequest{Method: "get"})
			if !bytes.Equal(got.GetPayload(), state) {
				t.Fatal("the restored state differs")
			}
		})
	}
}

func TestShutdownAnswersThenStops(t *testing.T) {
	r := start(t, &memo{})
	if _, err := r.client.Shutdown(r.ctx(), &pluginv1.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of Shutdown")
	}
}

// chatty prints to stdout at every call, as a plugin author's stray debug line would.
type chatty struct{ memo }

func (c *chatty) Invoke(ctx context.Context, method string, payload []byte) ([]byte, error) {
	fmt.Println("a stray line on stdout")
	return c.memo.Invoke(ctx, method, payload)
}

// spinner computes on request ("spin", for the milliseconds its payload says), echoes,
// and says how many threads run Go code ("threads").
type spinner struct{ Stateless }

func (spinner) Describe() Description { return Description{Name: "spinner", Version: "test"} }

func (spinner) Invoke(_ context.Context, method string, payload []byte) ([]byte, error) {
	switch method {
	case "spin":
		ms, err := strconv.Atoi(string(payload))
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		until, x := time.Now().Add(time.Duration(ms)*time.Millisecond), 0
		for time.Now().Before(until) {
			x++
		}
		return []byte(strconv.Itoa(x)), nil
	case "threads":
		return []byte(strconv.Itoa(runtime.GOMAXPROCS(0))), nil
	}
	return payload, nil
}

// TestMain runs this test binary as a plugin when a test below starts it as one.
func TestMain(m *testing.M) {
	switch os.Getenv("BATON_GO_SDK_TEST_PLUGIN") {
	case "chatty":
		Serve(&chatty{})
	case "spinner":
		Serve(spinner{})
	}
	os.Exit(m.Run())
}

// plugin is this test binary started as a plugin process by Serve, as a host would.
type plugin struct {
	cmd    *exec.Cmd
	conn   *grpc.ClientConn
	stderr *bytes.Buffer
	// lines after the handshake line; closed when stdout closes.
	lines chan string
}

func startProcess(t *testing.T, kind string, env ...string) *plugin {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "p.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), "BATON_GO_SDK_TEST_PLUGIN="+kind, EnvSocket+"="+socket,
		EnvProtocolVersion+"=1", EnvToken+"=t"), env...)
	p := &plugin{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan string, 4)}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.lines <- s.Text()
		}
		close(p.lines)
	}()
	select {
	case line := <-p.lines:
		if line != "baton|1|unix|"+socket {
			t.Fatalf("handshake line %q; stderr: %s", line, p.stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no handshake within 20 s; stderr: %s", p.stderr.String())
	}
	if p.conn, err = grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.conn.Close() })
	return p
}

func (p *plugin) invoke(method, payload string) (string, error) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), TokenMetadataKey, "t")
	resp, err := pluginv1.NewPluginClient(p.conn).Invoke(ctx, &pluginv1.InvokeRequest{Method: method, Payload: []byte(payload)})
	if err != nil {
		return "", err
	}
	return string(resp.Payload), nil
}

// cpuTicks is the CPU time (user + system, in clock ticks) process pid has used.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields from the last ')': state is field 3, utime and stime 14 and 15.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, err1 := strconv.Atoi(fields[11])
	stime, err2 := strconv.Atoi(fields[12])
	if err1 != nil || err2 != nil {
		t.Fatalf("malformed /proc/%d/stat: %s", pid, stat)
	}
	return utime + stime
}

func TestOnOneThreadAPluginAnswersWhileACallComputes(t *testing.T) {
	p := startProcess(t, "spinner")
	if threads, err := p.invoke("threads", ""); err != nil || threads != "1" {
		t.Fatalf("threads = %q, %v; want 1 by default; stderr: %s", threads, err, p.stderr.String())
	}
	spun := make(chan error, 1)
	before := cpuTicks(t, p.cmd.Process.Pid)
	go func() { _, err := p.invoke("spin", "2000"); spun <- err }()
	for deadline := time.Now().Add(5 * time.Second); cpuTicks(t, p.cmd.Process.Pid) < before+5; {
		if time.Now().After(deadline) {
			t.Fatal("the spin did not start within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	started := time.Now()
	for i := range 20 {
		asked := time.Now()
		want := fmt.Sprintf("call %d", i)
		if got, err := p.invoke("echo", want); err != nil || got != want {
			t.Fatalf("echo %d = %q, %v", i, got, err)
		}
		if took := time.Since(asked); took > 500*time.Millisecond {
			t.Fatalf("echo %d took %v beside a computing call", i, took)
		}
	}
	select {
	case err := <-spun:
		t.Fatalf("the spin ended (%v) before the echoes did (%v): they were not served beside it", err, time.Since(started))
	default:
	}
	if err := <-spun; err != nil {
		t.Fatal(err)
	}
	more := startProcess(t, "spinner", EnvWorkers+"=3")
	if threads, err := more.invoke("threads", ""); err != nil || threads != "3" {
		t.Fatalf("threads = %q, %v; want 3 from %s", threads, err, EnvWorkers)
	}
}

func TestAProcessKeepsStdoutForTheHandshakeAndExitsOnSigterm(t *testing.T) {
	p := startProcess(t, "chatty")
	if _, err := p.invoke("get", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr: %s", err, p.stderr.String())
		}
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatal("still running 10 s after SIGTERM")
	}
	if rest, ok := <-p.lines; ok {
		t.Fatalf("stdout after the handshake: %q", rest)
	}
	if !strings.Contains(p.stderr.String(), "a stray line on stdout") {
		t.Errorf("the stray line did not reach stderr: %s", p.stderr.String())
	}
	if !strings.Contains(p.stderr.String(), "INFO msg=serving") {
		t.Errorf("stderr lacks the serving line: %s", p.stderr.String())
	}
}
