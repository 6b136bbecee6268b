package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"
)

// stateSchema is the state format this build writes and reads: ../counter/STATE.md,
// byte for byte the Rust and Python counters' format.
const stateSchema = 1

var magic = []byte("BTNC")

// encode writes counts in state format 1, keys sorted by their bytes so equal counts
// give equal bytes in every implementation.
func encode(counts map[string]int64) []byte {
	keys := make([]string, 0, len(counts))
	size := 8
	for k := range counts {
		keys = append(keys, k)
		size += 12 + len(k)
	}
	sort.Strings(keys) // Go compares strings bytewise
	out := make([]byte, 0, size)
	out = append(out, magic...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(keys)))
	for _, k := range keys {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(k)))
		out = append(out, k...)
		out = binary.LittleEndian.AppendUint64(out, uint64(counts[k]))
	}
	return out
}

var errTruncated = errors.New("counter state is truncated")

// decode reads a format-1 state, refusing anything malformed.
func decode(b []byte) (map[string]int64, error) {
	pos := 0
	take := func(n int) ([]byte, error) {
		if n < 0 || n > len(b)-pos {
			return nil, fmt.Errorf("%w at byte %d", errTruncated, pos)
		}
		pos += n
		return b[pos-n : pos], nil
	}
	head, err := take(8)
	if err != nil {
		return nil, err
	}
	if string(head[:4]) != string(magic) {
		return nil, errors.New(`counter state does not start with the magic bytes "BTNC"`)
	}
	count := binary.LittleEndian.Uint32(head[4:])
	counts := make(map[string]int64, min(count, 1<<16))
	for range count {
		n, err := take(4)
		if err != nil {
			return nil, err
		}
		at := pos
		key, err := take(int(binary.LittleEndian.Uint32(n)))
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(key) {
			return nil, fmt.Errorf("counter state key at byte %d is not UTF-8", at)
		}
		value, err := take(8)
		if err != nil {
			return nil, err
		}
		if _, dup := counts[string(key)]; dup {
			return nil, fmt.Errorf("counter state has the key %q twice", key)
		}
		counts[string(key)] = int64(binary.LittleEndian.Uint64(value))
	}
	if rest := len(b) - pos; rest != 0 {
		return nil, fmt.Errorf("counter state has %d unexpected bytes after the last entry", rest)
	}
	return counts, nil
}
