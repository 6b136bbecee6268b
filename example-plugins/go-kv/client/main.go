// Command client calls a go-kv plugin through a running baton daemon, with the
// generated kv.v1 client a go-plugin host would have used on the plugin's own
// connection: only the connection changes (the daemon's socket, and the plugin's name
// in the x-baton-plugin metadata on every call).
//
//	client -socket baton.sock [-plugin kv] put KEY VALUE
//	client -socket baton.sock [-plugin kv] get KEY
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"baton.invalid/examples/go-kv/kvpb"
)

// pluginMetadataKey names the plugin a call to the daemon is for.
const pluginMetadataKey = "x-baton-plugin"

func main() {
	socket := flag.String("socket", "baton.sock", "the daemon's control socket")
	plugin := flag.String("plugin", "kv", "the plugin's name in the daemon's config")
	flag.Parse()
	if err := run(*socket, *plugin, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(socket, plugin string, args []string) error {
	conn, err := grpc.NewClient("unix:"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			ctx = metadata.AppendToOutgoingContext(ctx, pluginMetadataKey, plugin)
			return invoker(ctx, method, req, reply, cc, opts...)
		}))
	if err != nil {
		return fmt.Errorf("cannot use the daemon's socket %s: %w", socket, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv := kvpb.NewKVClient(conn)
	switch {
	case len(args) == 3 && args[0] == "put":
		if _, err := kv.Put(ctx, &kvpb.PutRequest{Key: args[1], Value: []byte(args[2])}); err != nil {
			return fmt.Errorf("put %q: %w", args[1], err)
		}
		return nil
	case len(args) == 2 && args[0] == "get":
		got, err := kv.Get(ctx, &kvpb.GetRequest{Key: args[1]})
		if err != nil {
			return fmt.Errorf("get %q: %w", args[1], err)
		}
		_, err = os.Stdout.Write(append(got.GetValue(), '\n'))
		return err
	default:
		return errors.New("usage: client -socket SOCKET [-plugin NAME] put KEY VALUE | get KEY")
	}
}
