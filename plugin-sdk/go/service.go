package baton

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"baton.invalid/baton/pb/pluginv1"
)

// maxStateBytes is the largest state Restore accepts.
const maxStateBytes = 16 << 30

// pluginService serves baton.plugin.v1.Plugin for one Plugin.
type pluginService struct {
	pluginv1.UnimplementedPluginServer
	plugin Plugin
	// services are the application services served beside it, by gRPC name.
	services []string
	// stop asks the process to stop; safe to call more than once.
	stop func(reason string)
}

func (s *pluginService) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	d := s.plugin.Describe()
	methods := make([]*pluginv1.MethodInfo, 0, len(d.Methods))
	for _, m := range d.Methods {
		methods = append(methods, &pluginv1.MethodInfo{Name: m.Name, Description: m.Description})
	}
	return &pluginv1.DescribeResponse{
		Name:               d.Name,
		PluginVersion:      d.Version,
		ProtocolVersion:    ProtocolVersion,
		StateSchemaVersion: d.StateSchemaVersion,
		Methods:            methods,
		Services:           s.services,
	}, nil
}

func (s *pluginService) Invoke(ctx context.Context, req *pluginv1.InvokeRequest) (*pluginv1.InvokeResponse, error) {
	out, err := s.plugin.Invoke(ctx, req.GetMethod(), req.GetPayload())
	if err != nil {
		return nil, asStatus("invoke", err)
	}
	return &pluginv1.InvokeResponse{Payload: out}, nil
}

func (s *pluginService) Snapshot(_ *pluginv1.SnapshotRequest, stream grpc.ServerStreamingServer[pluginv1.StateChunk]) error {
	ctx := stream.Context()
	schema := s.plugin.Describe().StateSchemaVersion
	if streamer, ok := s.plugin.(StateStreamer); ok {
		return snapshotStream(ctx, streamer, schema, stream)
	}
	state, err := s.plugin.Snapshot(ctx)
	if err != nil {
		return asStatus("snapshot", err)
	}
	chunks := Chunks(schema, state, ChunkSize)
	slog.Debug("snapshot taken", "bytes", len(state), "chunks", len(chunks))
	for _, c := range chunks {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

// snapshotStream sends a streamed state, reading one chunk ahead to know which is last.
func snapshotStream(ctx context.Context, p StateStreamer, schema uint32, stream grpc.ServerStreamingServer[pluginv1.StateChunk]) error {
	r, size, err := p.SnapshotStream(ctx)
	if err != nil {
		return asStatus("snapshot", err)
	}
	defer r.Close()
	read := func() ([]byte, error) {
		buf := make([]byte, ChunkSize)
		n, err := io.ReadFull(r, buf)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			err = nil
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "the plugin's snapshot stream failed: %v", err)
		}
		return buf[:n], nil
	}
	current, err := read()
	if err != nil {
		return err
	}
	var crc uint32
	var sent uint64
	for seq := uint64(0); ; seq++ {
		// A short read means the state ended; a full one may be followed by nothing.
		var next []byte
		if len(current) == ChunkSize {
			if next, err = read(); err != nil {
				return err
			}
		}
		crc = crc32.Update(crc, crc32.IEEETable, current)
		sent += uint64(len(current))
		last := len(next) == 0
		c := &pluginv1.StateChunk{SchemaVersion: schema, Seq: seq, Data: current, Last: last}
		if seq == 0 && size >= 0 {
			c.TotalBytes = uint64(size)
		}
		if last {
			if size >= 0 && sent != uint64(size) {
				// Sent as a failure, not as a last chunk the receiver would refuse as corrupt.
				return status.Errorf(codes.Internal, "the plugin's snapshot stream gave %d bytes but announced %d", sent, size)
			}
			c.Checksum = crc
		}
		if err := stream.Send(c); err != nil {
			return err
		}
		if last {
			slog.Debug("snapshot streamed", "bytes", sent, "chunks", seq+1)
			return nil
		}
		current = next
	}
}

func (s *pluginService) Restore(stream grpc.ClientStreamingServer[pluginv1.StateChunk, pluginv1.RestoreResponse]) error {
	ctx := stream.Context()
	if streamer, ok := s.plugin.(StateStreamer); ok {
		return restoreStream(ctx, streamer, stream)
	}
	r := NewReassembly(maxStateBytes)
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := r.Push(c); err != nil {
			return status.Error(codes.DataLoss, err.Error())
		}
	}
	schema, state, err := r.Finish()
	if err != nil {
		return status.Error(codes.DataLoss, err.Error())
	}
	if err := s.plugin.Restore(ctx, schema, state); err != nil {
		return asStatus("restore", err)
	}
	slog.Info("state restored", "bytes", len(state), "schema", schema)
	return stream.SendAndClose(&pluginv1.RestoreResponse{BytesRestored: uint64(len(state))})
}

// restoreStream hands the chunks' data to the plugin through a pipe as they pass the
// check; a broken stream reaches the plugin as an error from its reader.
func restoreStream(ctx context.Context, p StateStreamer, stream grpc.ClientStreamingServer[pluginv1.StateChunk, pluginv1.RestoreResponse]) error {
	check := NewChunkCheck(maxStateBytes)
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		_, _, err = check.Finish()
		return status.Error(codes.DataLoss, err.Error())
	}
	if err != nil {
		return err
	}
	if err := check.Push(first); err != nil {
		return status.Error(codes.DataLoss, err.Error())
	}
	size := int64(-1)
	if first.GetTotalBytes() != 0 {
		size = int64(first.GetTotalBytes())
	}
	pr, pw := io.Pipe()
	fed := make(chan error, 1)
	go func() {
		fed <- feed(stream, check, first, pw)
	}()
	err = p.RestoreStream(ctx, first.GetSchemaVersion(), pr, size)
	// Unblocks the feeder if the plugin stopped reading early.
	pr.CloseWithError(errRestoreReturned)
	feedErr := <-fed
	if err != nil {
		return asStatus("restore", err)
	}
	if feedErr != nil && !errors.Is(feedErr, errRestoreReturned) {
		return feedErr
	}
	_, length, err := check.Finish()
	if err != nil {
		return status.Error(codes.DataLoss, fmt.Sprintf("the plugin returned before reading the whole state: %v", err))
	}
	slog.Info("state restored", "bytes", length, "schema", first.GetSchemaVersion())
	return stream.SendAndClose(&pluginv1.RestoreResponse{BytesRestored: length})
}

var errRestoreReturned = errors.New("the plugin's RestoreStream returned")

// feed writes checked chunks' data into pw, closing it with io.EOF only after a good
// last chunk, and with the reason otherwise.
func feed(stream grpc.ClientStreamingServer[pluginv1.StateChunk, pluginv1.RestoreResponse], check *ChunkCheck, first *pluginv1.StateChunk, pw *io.PipeWriter) error {
	fail := func(err error) error {
		pw.CloseWithError(err)
		return err
	}
	if _, err := pw.Write(first.GetData()); err != nil {
		return err
	}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		if err := check.Push(c); err != nil {
			return fail(status.Error(codes.DataLoss, err.Error()))
		}
		if _, err := pw.Write(c.GetData()); err != nil {
			return err
		}
	}
	if _, _, err := check.Finish(); err != nil {
		return fail(status.Error(codes.DataLoss, err.Error()))
	}
	return pw.Close()
}

func (s *pluginService) Shutdown(context.Context, *pluginv1.ShutdownRequest) (*pluginv1.ShutdownResponse, error) {
	// The server stops gracefully, so this answer still goes out.
	s.stop("shutdown requested by the host")
	return &pluginv1.ShutdownResponse{}, nil
}
