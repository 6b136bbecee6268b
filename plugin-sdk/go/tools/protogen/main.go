// Command protogen writes the repository's Go gRPC stubs with protoc-gen-go and
// protoc-gen-go-grpc, without a system protoc: protocompile parses the .proto files
// into descriptors, and this program hands them to the two plugins as protoc would, in
// a CodeGeneratorRequest on their stdin. It writes the Go SDK's stubs (../../pb, from
// the repository's proto/) and the go-kv example's (example-plugins/go-kv/kvpb, from
// its own proto/).
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
	"sort"
	"strings"

	"github.com/bufbuild/protocompile"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// A target is one Go module's stubs: .proto files beneath protoRoot, generated into
// the module whose root is outRoot (both relative to this directory).
type target struct {
	protoRoot, outRoot string
	// module is the Go module's path; the stubs' import paths are beneath it.
	module string
	stubs  []stub
}

// A stub is one .proto, relative to its target's protoRoot, and its Go package
// ("import/path;name"), or "" to take the file's own go_package option.
type stub struct{ proto, goPackage string }

var targets = []target{
	{
		protoRoot: "../../../../proto",
		outRoot:   "../..",
		module:    "baton.invalid/baton",
		stubs: []stub{
			{"baton/plugin/v1/plugin.proto", "baton.invalid/baton/pb/pluginv1;pluginv1"},
			{"baton/host/v1/host.proto", "baton.invalid/baton/pb/hostv1;hostv1"},
		},
	},
	{
		// An application's own API, as a plugin author gets it: its go_package says
		// where the stubs go, as it did for the plugin's go-plugin build.
		protoRoot: "../../../../example-plugins/go-kv/proto",
		outRoot:   "../../../../example-plugins/go-kv",
		module:    "baton.invalid/examples/go-kv",
		stubs:     []stub{{"kv/v1/kv.proto", ""}},
	},
}

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
	for path, content := range files {
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

// generate returns every stub file of every target, by path relative to this directory.
func generate(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, t := range targets {
		request, err := codeGeneratorRequest(ctx, t)
		if err != nil {
			return nil, err
		}
		for _, plugin := range []string{"protoc-gen-go", "protoc-gen-go-grpc"} {
			files, err := runPlugin(ctx, plugin, request)
			if err != nil {
				return nil, err
			}
			for name, content := range files {
				out[filepath.Join(t.outRoot, name)] = content
			}
		}
	}
	return out, nil
}

func codeGeneratorRequest(ctx context.Context, t target) (*pluginpb.CodeGeneratorRequest, error) {
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
			ImportPaths: []string{t.protoRoot},
		}),
		// The stubs carry the .proto files' comments.
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	var names []string
	params := []string{"module=" + t.module}
	for _, s := range t.stubs {
		names = append(names, s.proto)
		if s.goPackage != "" {
			params = append(params, "M"+s.proto+"="+s.goPackage)
		}
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

// compare returns the stub files whose committed content differs from `files`, sorted.
func compare(files map[string][]byte) []string {
	var stale []string
	for path, content := range files {
		committed, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(committed, content) {
			stale = append(stale, path)
		}
	}
	sort.Strings(stale)
	return stale
}
