// Command protogen writes the Go SDK's gRPC stubs (../../pb) from the repository's
// proto/ with protoc-gen-go and protoc-gen-go-grpc, without a system protoc:
// protocompile parses the .proto files into descriptors, and this program hands them
// to the two plugins as protoc would, in a CodeGeneratorRequest on their stdin.
//
// Run it from this directory: go run . (or go run . -check to compare only).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// module is the SDK's module path; the stubs' import paths are beneath it.
const module = "baton.invalid/baton"

// stubs maps each .proto, relative to the repository's proto/, to its Go package.
var stubs = []struct{ proto, goPackage string }{
	{"baton/plugin/v1/plugin.proto", module + "/pb/pluginv1;pluginv1"},
	{"baton/host/v1/host.proto", module + "/pb/hostv1;hostv1"},
}

// Paths relative to this directory.
const (
	protoRoot = "../../../../proto"
	sdkRoot   = "../.."
)

func main() {
	check := flag.Bool("check", false, "compare the committed stubs with fresh ones instead of writing them")
	flag.Parse()
	files, err := generate(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
	if *check {
		if stale := compare(files); len(stale) > 0 {
			fmt.Fprintf(os.Stderr, "protogen: stale stubs: %s; run `go run .` in plugin-sdk/go/tools/protogen\n", strings.Join(stale, ", "))
			os.Exit(1)
		}
		return
	}
	for name, content := range files {
		path := filepath.Join(sdkRoot, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "protogen:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(path, content, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "protogen:", err)
			os.Exit(1)
		}
	}
}

// generate returns every stub file, by path relative to the SDK's root.
func generate(ctx context.Context) (map[string][]byte, error) {
	request, err := codeGeneratorRequest(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
		files, err := runPlugin(ctx, plugin, request)
		if err != nil {
			return nil, err
		}
		for name, content := range files {
			out[name] = content
		}
	}
	return out, nil
}

func codeGeneratorRequest(ctx context.Context) (*pluginpb.CodeGeneratorRequest, error) {
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{protoRoot},
		}),
		// The stubs carry the .proto files' comments.
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	var names []string
	params := []string{"module=" + module}
	for _, s := range stubs {
		names = append(names, s.proto)
		params = append(params, "M"+s.proto+"="+s.goPackage)
	}
	compiled, err := compiler.Compile(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("compiling %s: %w", strings.Join(names, ", "), err)
	}
	var protos []*descriptorpb.FileDescriptorProto
	for _, f := range compiled {
		protos = append(protos, protodesc.ToFileDescriptorProto(f))
	}
	return &pluginpb.CodeGeneratorRequest{
		FileToGenerate: names,
		Parameter:      proto.String(strings.Join(params, ",")),
		ProtoFile:      protos,
	}, nil
}

// runPlugin runs one protoc plugin, pinned as a tool in this module's go.mod.
func runPlugin(ctx context.Context, plugin string, request *pluginpb.CodeGeneratorRequest) (map[string][]byte, error) {
	input, err := proto.Marshal(request)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", "tool", plugin)
	cmd.Stdin = bytes.NewReader(input)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", plugin, err, stderr.String())
	}
	var response pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &response); err != nil {
		return nil, fmt.Errorf("%s answered something other than a CodeGeneratorResponse: %w", plugin, err)
	}
	if response.Error != nil {
		return nil, fmt.Errorf("%s: %s", plugin, response.GetError())
	}
	files := map[string][]byte{}
	for _, f := range response.File {
		if f.GetInsertionPoint() != "" {
			return nil, errors.New(plugin + " asked for an insertion point, which protogen does not support")
		}
		files[f.GetName()] = []byte(f.GetContent())
	}
	return files, nil
}

// compare returns the stub files whose committed content differs from `files`.
func compare(files map[string][]byte) []string {
	var stale []string
	for name, content := range files {
		committed, err := os.ReadFile(filepath.Join(sdkRoot, name))
		if err != nil || !bytes.Equal(committed, content) {
			stale = append(stale, name)
		}
	}
	return stale
}
