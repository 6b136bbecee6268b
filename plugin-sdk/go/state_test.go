package baton

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"testing"

	"baton.invalid/baton/pb/pluginv1"
)

// vectors is proto/testdata/state-vectors.json, which every baton SDK's tests read.
type vectors struct {
	ChunkSize int `json:"chunk_size"`
	States    []struct {
		Name          string `json:"name"`
		SchemaVersion uint32 `json:"schema_version"`
		State         struct {
			Hex  *string `json:"hex"`
			Fill *int    `json:"fill"`
		} `json:"state"`
		Length int    `json:"length"`
		CRC32  uint32 `json:"crc32"`
		Chunks []struct {
			Seq        uint64 `json:"seq"`
			Offset     int    `json:"offset"`
			Length     int    `json:"length"`
			Last       bool   `json:"last"`
			Checksum   uint32 `json:"checksum"`
			TotalBytes uint64 `json:"total_bytes"`
		} `json:"chunks"`
	} `json:"states"`
	Streams []struct {
		Name   string  `json:"name"`
		Limit  *uint64 `json:"limit"`
		Chunks []struct {
			SchemaVersion uint32 `json:"schema_version"`
			Seq           uint64 `json:"seq"`
			DataHex       string `json:"data_hex"`
			Last          bool   `json:"last"`
			Checksum      uint32 `json:"checksum"`
			TotalBytes    uint64 `json:"total_bytes"`
		} `json:"chunks"`
		Expect struct {
			Error         string `json:"error"`
			SchemaVersion uint32 `json:"schema_version"`
			StateHex      string `json:"state_hex"`
		} `json:"expect"`
	} `json:"streams"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	text, err := os.ReadFile("../../proto/testdata/state-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(text, &v); err != nil {
		t.Fatalf("state-vectors.json: %v", err)
	}
	return v
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStatesSplitIntoThePublishedChunksAndBack(t *testing.T) {
	v := loadVectors(t)
	if v.ChunkSize != ChunkSize {
		t.Fatalf("the vectors are chunked at %d bytes, this SDK at %d", v.ChunkSize, ChunkSize)
	}
	for _, s := range v.States {
		t.Run(s.Name, func(t *testing.T) {
			var state []byte
			switch {
			case s.State.Hex != nil:
				state = mustHex(t, *s.State.Hex)
			case s.State.Fill != nil:
				for i := range *s.State.Fill {
					state = append(state, byte(i%251))
				}
			}
			if len(state) != s.Length || crc32.ChecksumIEEE(state) != s.CRC32 {
				t.Fatalf("state of %d bytes, crc %08x; want %d, %08x", len(state), crc32.ChecksumIEEE(state), s.Length, s.CRC32)
			}
			made := Chunks(s.SchemaVersion, state, 0)
			if len(made) != len(s.Chunks) {
				t.Fatalf("%d chunks, want %d", len(made), len(s.Chunks))
			}
			r := NewReassembly(1 << 40)
			for i, want := range s.Chunks {
				got := made[i]
				if got.SchemaVersion != s.SchemaVersion || got.Seq != want.Seq || got.Last != want.Last ||
					got.Checksum != want.Checksum || got.TotalBytes != want.TotalBytes ||
					!bytes.Equal(got.Data, state[want.Offset:want.Offset+want.Length]) {
					t.Fatalf("chunk %d: got seq %d last %v checksum %08x total %d, %d bytes; want %+v",
						i, got.Seq, got.Last, got.Checksum, got.TotalBytes, len(got.Data), want)
				}
				if err := r.Push(got); err != nil {
					t.Fatal(err)
				}
			}
			schema, back, err := r.Finish()
			if err != nil || schema != s.SchemaVersion || !bytes.Equal(back, state) {
				t.Fatalf("reassembled schema %d, %d bytes, %v", schema, len(back), err)
			}
		})
	}
}

func TestStreamsAreAcceptedOrRefusedAsPublished(t *testing.T) {
	kinds := map[string]error{
		"out_of_order":   ErrOutOfOrder,
		"schema_changed": ErrSchemaChanged,
		"after_last":     ErrAfterLast,
		"truncated":      ErrTruncated,
		"checksum":       ErrChecksum,
		"length":         ErrLength,
		"too_large":      ErrTooLarge,
	}
	for _, s := range loadVectors(t).Streams {
		t.Run(s.Name, func(t *testing.T) {
			limit := uint64(1 << 40)
			if s.Limit != nil {
				limit = *s.Limit
			}
			r := NewReassembly(limit)
			var err error
			for _, c := range s.Chunks {
				err = r.Push(&pluginv1.StateChunk{
					SchemaVersion: c.SchemaVersion, Seq: c.Seq, Data: mustHex(t, c.DataHex),
					Last: c.Last, Checksum: c.Checksum, TotalBytes: c.TotalBytes,
				})
				if err != nil {
					break
				}
			}
			var schema uint32
			var state []byte
			if err == nil {
				schema, state, err = r.Finish()
			}
			if s.Expect.Error != "" {
				want, known := kinds[s.Expect.Error]
				if !known {
					t.Fatalf("unknown error kind %q in the vectors", s.Expect.Error)
				}
				if !errors.Is(err, want) {
					t.Fatalf("got %v, want %v", err, want)
				}
				return
			}
			if err != nil || schema != s.Expect.SchemaVersion || !bytes.Equal(state, mustHex(t, s.Expect.StateHex)) {
				t.Fatalf("got schema %d, %x, %v; want %d, %s", schema, state, err, s.Expect.SchemaVersion, s.Expect.StateHex)
			}
		})
	}
}
