package baton

import (
	"context"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"baton.invalid/baton/pb/hostv1"
)

// fakeHost serves baton.host.v1.Host as the real host does for one plugin: a token
// check, and a key-value store that pages its listing two keys at a time.
type fakeHost struct {
	hostv1.UnimplementedHostServer
	mu     sync.Mutex
	kv     map[string][]byte
	logs   []string
	events []string
}

func (f *fakeHost) KvGet(_ context.Context, r *hostv1.KvGetRequest) (*hostv1.KvGetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.kv[r.GetKey()]
	return &hostv1.KvGetResponse{Found: ok, Value: v}, nil
}

func (f *fakeHost) KvPut(_ context.Context, r *hostv1.KvPutRequest) (*hostv1.KvPutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kv[r.GetKey()] = r.GetValue()
	return &hostv1.KvPutResponse{}, nil
}

func (f *fakeHost) KvDelete(_ context.Context, r *hostv1.KvDeleteRequest) (*hostv1.KvDeleteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.kv[r.GetKey()]
	delete(f.kv, r.GetKey())
	return &hostv1.KvDeleteResponse{Existed: ok}, nil
}

func (f *fakeHost) KvList(_ context.Context, r *hostv1.KvListRequest) (*hostv1.KvListResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var keys []string
	for k := range f.kv {
		if strings.HasPrefix(k, r.GetPrefix()) && k > r.GetStartAfter() {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > 2 {
		return &hostv1.KvListResponse{Keys: keys[:2], More: true}, nil
	}
	return &hostv1.KvListResponse{Keys: keys}, nil
}

func (f *fakeHost) Log(_ context.Context, r *hostv1.LogRequest) (*hostv1.LogResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, r.GetLevel().String()+" "+r.GetMessage()+" key="+r.GetFields()["key"])
	return &hostv1.LogResponse{}, nil
}

func (f *fakeHost) EmitEvent(_ context.Context, r *hostv1.EmitEventRequest) (*hostv1.EmitEventResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, r.GetKind()+": "+r.GetMessage())
	return &hostv1.EmitEventResponse{}, nil
}

func TestTheHostClientCallsWithTheTokenFromTheEnvironment(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "host.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var authorities []string
	var mu sync.Mutex
	server := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		authorities = append(authorities, md.Get(":authority")...)
		mu.Unlock()
		if got := md.Get(TokenMetadataKey); len(got) != 1 || got[0] != "tok" {
			return nil, status.Error(codes.Unauthenticated, "no token")
		}
		return h(ctx, req)
	}))
	host := &fakeHost{kv: map[string][]byte{}}
	hostv1.RegisterHostServer(server, host)
	go func() { _ = server.Serve(lis) }()
	t.Cleanup(server.Stop)

	t.Setenv(EnvHostSocket, socket)
	t.Setenv(EnvToken, "tok")
	client, err := ConnectHost()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	if _, found, err := client.KvGet(ctx, "a"); err != nil || found {
		t.Fatalf("KvGet of an unset key: %v, %v", found, err)
	}
	for _, k := range []string{"n/1", "n/2", "n/3", "other"} {
		if err := client.KvPut(ctx, k, []byte("v"+k)); err != nil {
			t.Fatal(err)
		}
	}
	if v, found, err := client.KvGet(ctx, "n/2"); err != nil || !found || string(v) != "vn/2" {
		t.Fatalf("KvGet: %q, %v, %v", v, found, err)
	}
	keys, err := client.KvList(ctx, "n/")
	if err != nil || strings.Join(keys, ",") != "n/1,n/2,n/3" {
		t.Fatalf("KvList over two pages: %v, %v", keys, err)
	}
	if existed, err := client.KvDelete(ctx, "n/1"); err != nil || !existed {
		t.Fatalf("KvDelete: %v, %v", existed, err)
	}
	if err := client.Log(ctx, LogWarn, "disk low", map[string]string{"key": "k"}); err != nil {
		t.Fatal(err)
	}
	if err := client.EmitEvent(ctx, "flushed", "all of it"); err != nil {
		t.Fatal(err)
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	if len(host.logs) != 1 || host.logs[0] != "LOG_LEVEL_WARN disk low key=k" {
		t.Errorf("logs: %v", host.logs)
	}
	if len(host.events) != 1 || host.events[0] != "flushed: all of it" {
		t.Errorf("events: %v", host.events)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(authorities) == 0 {
		t.Error("the server saw no :authority")
	}
	for _, a := range authorities {
		if a != "localhost" {
			t.Errorf("authority %q: the host's server wants a plain name", a)
		}
	}
}

func TestConnectHostNamesWhatIsMissing(t *testing.T) {
	t.Setenv(EnvHostSocket, "")
	t.Setenv(EnvToken, "tok")
	if _, err := ConnectHost(); err == nil || !strings.Contains(err.Error(), EnvHostSocket+" is not set") {
		t.Fatalf("got %v", err)
	}
}
