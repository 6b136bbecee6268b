package main

import (
	"encoding/json"
	"fmt"
)

// stateSchema is the version of the state format below; a build that changes the
// format bumps it and keeps reading the older versions.
const stateSchema = 1

// The state, schema 1: one JSON object from key to value, each value base64 (standard
// alphabet, padded), as encoding/json writes a []byte. encoding/json writes an object's
// keys sorted, so equal stores give equal bytes, which baton check requires. An empty
// store is {}.

func encode(data map[string][]byte) ([]byte, error) {
	out, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("go-kv state: %w", err)
	}
	return out, nil
}

func decode(state []byte) (map[string][]byte, error) {
	// An empty state is what a plugin that never ran sends (baton's empty snapshot).
	if len(state) == 0 {
		return map[string][]byte{}, nil
	}
	var data map[string][]byte
	if err := json.Unmarshal(state, &data); err != nil {
		return nil, fmt.Errorf("go-kv state (schema %d) is not a JSON object of base64 values: %w", stateSchema, err)
	}
	if data == nil {
		return nil, fmt.Errorf("go-kv state (schema %d) is null, not a JSON object", stateSchema)
	}
	return data, nil
}
