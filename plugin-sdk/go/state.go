package baton

import (
	"errors"
	"fmt"
	"hash/crc32"

	"baton.invalid/baton/pb/pluginv1"
)

// ChunkSize is the data carried by each StateChunk the SDK sends: the Rust SDK's size
// (proto/testdata/state-vectors.json), small enough that the host pipes the old
// process's Snapshot into the new one's Restore with both at work at once.
const ChunkSize = 64 << 10

// Why a stream of chunks does not make a state. Errors from [ChunkCheck] wrap one of
// these, with the detail.
var (
	ErrOutOfOrder    = errors.New("state chunk out of order")
	ErrSchemaChanged = errors.New("state chunk changed the schema version")
	ErrAfterLast     = errors.New("state chunk after the last")
	ErrTruncated     = errors.New("state stream truncated")
	ErrChecksum      = errors.New("state checksum mismatch")
	ErrTooLarge      = errors.New("state too large")
	ErrLength        = errors.New("state length mismatch")
)

// Chunks splits state into chunks of at most size bytes (ChunkSize when size is 0):
// the first carries the total length, the last the CRC-32 of all the data. An empty
// state is one empty last chunk.
func Chunks(schemaVersion uint32, state []byte, size int) []*pluginv1.StateChunk {
	if size <= 0 {
		size = ChunkSize
	}
	count := max(1, (len(state)+size-1)/size)
	out := make([]*pluginv1.StateChunk, 0, count)
	var crc uint32
	for i := range count {
		data := state[min(i*size, len(state)):min((i+1)*size, len(state))]
		crc = crc32.Update(crc, crc32.IEEETable, data)
		c := &pluginv1.StateChunk{SchemaVersion: schemaVersion, Seq: uint64(i), Data: data}
		if i == 0 {
			c.TotalBytes = uint64(len(state))
		}
		if i == count-1 {
			c.Last = true
			c.Checksum = crc
		}
		out = append(out, c)
	}
	return out
}

// ChunkCheck checks a stream of chunks as they arrive, keeping none of their data:
// order, one schema version, the announced length, a size limit, and the checksum.
type ChunkCheck struct {
	limit     uint64
	schema    uint32
	nextSeq   uint64
	bytes     uint64
	crc       uint32
	announced uint64 // 0: not announced
	done      bool
}

// NewChunkCheck accepts a state of at most limit bytes.
func NewChunkCheck(limit uint64) *ChunkCheck { return &ChunkCheck{limit: limit} }

// Push checks the next chunk; an error wraps one of the Err* values.
func (c *ChunkCheck) Push(chunk *pluginv1.StateChunk) error {
	if c.done {
		return fmt.Errorf("%w: chunk %d arrived after the last chunk", ErrAfterLast, chunk.GetSeq())
	}
	if chunk.GetSeq() != c.nextSeq {
		return fmt.Errorf("%w: expected seq %d, got %d", ErrOutOfOrder, c.nextSeq, chunk.GetSeq())
	}
	if c.nextSeq == 0 {
		c.schema = chunk.GetSchemaVersion()
	} else if chunk.GetSchemaVersion() != c.schema {
		return fmt.Errorf("%w: chunk %d has schema version %d, but the snapshot started with %d",
			ErrSchemaChanged, chunk.GetSeq(), chunk.GetSchemaVersion(), c.schema)
	}
	if chunk.GetSeq() == 0 && chunk.GetTotalBytes() != 0 {
		if chunk.GetTotalBytes() > c.limit {
			return fmt.Errorf("%w: a state of at least %d bytes exceeds the limit of %d bytes",
				ErrTooLarge, chunk.GetTotalBytes(), c.limit)
		}
		c.announced = chunk.GetTotalBytes()
	}
	c.bytes += uint64(len(chunk.GetData()))
	if c.bytes > c.limit {
		return fmt.Errorf("%w: a state of at least %d bytes exceeds the limit of %d bytes", ErrTooLarge, c.bytes, c.limit)
	}
	if c.announced != 0 && (c.bytes > c.announced || (chunk.GetLast() && c.bytes != c.announced)) {
		return fmt.Errorf("%w: the first chunk announced %d bytes, the chunks carry %d", ErrLength, c.announced, c.bytes)
	}
	c.crc = crc32.Update(c.crc, crc32.IEEETable, chunk.GetData())
	c.nextSeq++
	if chunk.GetLast() {
		c.done = true
		if c.crc != chunk.GetChecksum() {
			return fmt.Errorf("%w: the last chunk says %08x, the data hashes to %08x", ErrChecksum, chunk.GetChecksum(), c.crc)
		}
	}
	return nil
}

// Finish returns the schema version and the state's length once the last chunk has
// passed, or ErrTruncated.
func (c *ChunkCheck) Finish() (schemaVersion uint32, length uint64, err error) {
	if !c.done {
		return 0, 0, fmt.Errorf("%w: the stream ended after %d chunks without a last chunk", ErrTruncated, c.nextSeq)
	}
	return c.schema, c.bytes, nil
}

// Announced is the length the first chunk announced, or 0.
func (c *ChunkCheck) Announced() uint64 { return c.announced }

// maxUpFront is the most Reassembly allocates on a sender's word alone.
const maxUpFront = 256 << 20

// Reassembly collects chunks into the whole state, checking each as it comes.
type Reassembly struct {
	check *ChunkCheck
	data  []byte
}

// NewReassembly accepts a state of at most limit bytes.
func NewReassembly(limit uint64) *Reassembly { return &Reassembly{check: NewChunkCheck(limit)} }

// Push takes the next chunk.
func (r *Reassembly) Push(chunk *pluginv1.StateChunk) error {
	if err := r.check.Push(chunk); err != nil {
		return err
	}
	if chunk.GetSeq() == 0 && r.check.Announced() != 0 {
		// One allocation for an ordinary state instead of a copy at every doubling;
		// capped, because the number comes from the sender and Go cannot survive an
		// allocation it cannot have.
		r.data = make([]byte, 0, min(r.check.Announced(), maxUpFront))
	}
	r.data = append(r.data, chunk.GetData()...)
	return nil
}

// Finish returns the schema version and the whole state once the last chunk has
// arrived.
func (r *Reassembly) Finish() (uint32, []byte, error) {
	schema, _, err := r.check.Finish()
	if err != nil {
		return 0, nil, err
	}
	return schema, r.data, nil
}
