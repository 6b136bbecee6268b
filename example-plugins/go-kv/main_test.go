package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"baton.invalid/baton"
	"baton.invalid/baton/pb/pluginv1"
	"baton.invalid/examples/go-kv/kvpb"
)

func TestGetAndPut(t *testing.T) {
	s := newStore()
	ctx := context.Background()
	if _, err := s.Put(ctx, &kvpb.PutRequest{Key: "fruit", Value: []byte("apple")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, &kvpb.PutRequest{Key: "nothing"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		key   string
		value string
		code  codes.Code
	}{
		{"a stored value", "fruit", "apple", codes.OK},
		{"an empty value is still a value", "nothing", "", codes.OK},
		{"a key never put", "vegetable", "", codes.NotFound},
		{"an empty key", "", "", codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Get(ctx, &kvpb.GetRequest{Key: tc.key})
			if status.Code(err) != tc.code {
				t.Fatalf("Get(%q): %v, want code %v", tc.key, err, tc.code)
			}
			if err == nil && string(got.GetValue()) != tc.value {
				t.Fatalf("Get(%q) = %q, want %q", tc.key, got.GetValue(), tc.value)
			}
		})
	}
	if _, err := s.Put(ctx, &kvpb.PutRequest{Value: []byte("x")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Put with an empty key: %v", err)
	}
}

func TestTheStateRoundTripsInEqualBytes(t *testing.T) {
	ctx := context.Background()
	from := newStore()
	// Put in an order other than the keys' own: the state's bytes must not depend on it.
	for _, kv := range [][2]string{{"b", "2"}, {"a", "1"}, {"c", ""}, {"ключ", "\x00\xff"}} {
		if _, err := from.Put(ctx, &kvpb.PutRequest{Key: kv[0], Value: []byte(kv[1])}); err != nil {
			t.Fatal(err)
		}
	}
	state, err := from.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"a":"MQ==","b":"Mg==","c":"","ключ":"AP8="}`
	if string(state) != want {
		t.Fatalf("state %s, want %s", state, want)
	}
	to := newStore()
	if err := to.Restore(ctx, stateSchema, state); err != nil {
		t.Fatal(err)
	}
	again, err := to.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, state) {
		t.Fatalf("restored store snapshots %s, the original %s", again, state)
	}
	empty, err := newStore().Snapshot(ctx)
	if err != nil || string(empty) != "{}" {
		t.Fatalf("an empty store's state: %q, %v", empty, err)
	}
}

func TestARefusedStateLeavesTheStoreAsItWas(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		schema uint32
		state  string
		code   codes.Code
	}{
		{"another schema", 2, `{}`, codes.FailedPrecondition},
		{"not JSON", stateSchema, `{"a":`, codes.InvalidArgument},
		{"a value that is not base64", stateSchema, `{"a":"not base64!"}`, codes.InvalidArgument},
		{"null", stateSchema, `null`, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore()
			if _, err := s.Put(ctx, &kvpb.PutRequest{Key: "kept", Value: []byte("yes")}); err != nil {
				t.Fatal(err)
			}
			err := s.Restore(ctx, tc.schema, []byte(tc.state))
			if status.Code(err) != tc.code {
				t.Fatalf("Restore: %v, want code %v", err, tc.code)
			}
			got, err := s.Get(ctx, &kvpb.GetRequest{Key: "kept"})
			if err != nil || string(got.GetValue()) != "yes" {
				t.Fatalf("after the refusal Get(kept) = %v, %v", got, err)
			}
		})
	}
}

// Served as a host runs it, in-process: KV behind the launch token, listed by
// Describe and by gRPC reflection (which `baton ctl call` uses).
func TestServesKVBesideBatonsServiceBehindTheToken(t *testing.T) {
	launch := baton.Launch{Socket: filepath.Join(t.TempDir(), "kv.sock"), HostProtocolVersion: "1", Token: "the-token"}
	ctx, cancel := context.WithCancel(context.Background())
	s := newStore()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- baton.Run(ctx, s, launch, pw, baton.WithServices(func(r grpc.ServiceRegistrar) { kvpb.RegisterKVServer(r, s) }))
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := "baton|1|unix|" + launch.Socket + "\n"; line != want {
		t.Fatalf("handshake %q, want %q", line, want)
	}
	conn, err := grpc.NewClient("unix:"+launch.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	kv := kvpb.NewKVClient(conn)
	if _, err := kv.Put(context.Background(), &kvpb.PutRequest{Key: "k", Value: []byte("v")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Put without the token: %v, want Unauthenticated", err)
	}
	withToken := metadata.AppendToOutgoingContext(context.Background(), baton.TokenMetadataKey, launch.Token)
	if _, err := kv.Put(withToken, &kvpb.PutRequest{Key: "k", Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(withToken, &kvpb.GetRequest{Key: "k"})
	if err != nil || string(got.GetValue()) != "v" {
		t.Fatalf("Get(k) = %v, %v", got, err)
	}

	described, err := pluginv1.NewPluginClient(conn).Describe(withToken, &pluginv1.DescribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(described.GetServices(), []string{"kv.v1.KV"}) || described.GetStateSchemaVersion() != stateSchema {
		t.Fatalf("Describe: %v", described)
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(withToken)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	})
	if err != nil {
		t.Fatal(err)
	}
	answer, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, service := range answer.GetListServicesResponse().GetService() {
		listed = append(listed, service.GetName())
	}
	// Only what a client may call: not baton's own service, health, nor reflection.
	if !slices.Equal(listed, []string{"kv.v1.KV"}) {
		t.Fatalf("reflection lists %s, not kv.v1.KV alone", strings.Join(listed, ", "))
	}
	_ = stream.CloseSend()
}
