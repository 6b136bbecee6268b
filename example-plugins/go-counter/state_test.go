package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"testing"
)

// The counter state in the shared wire vectors is what the Rust and Python counters
// write for apples=3, pears=2.
func TestEncodesTheSharedCounterStateByteForByte(t *testing.T) {
	text, err := os.ReadFile("../../proto/testdata/state-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		States []struct {
			Name  string `json:"name"`
			State struct {
				Hex string `json:"hex"`
			} `json:"state"`
		} `json:"states"`
	}
	if err := json.Unmarshal(text, &v); err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, s := range v.States {
		if s.Name == "counter: apples=3, pears=2" {
			want, _ = hex.DecodeString(s.State.Hex)
		}
	}
	if want == nil {
		t.Fatal("no counter state in the vectors")
	}
	got := encode(map[string]int64{"pears": 2, "apples": 3})
	if !bytes.Equal(got, want) {
		t.Fatalf("encode: %x\nwant    %x", got, want)
	}
	back, err := decode(want)
	if err != nil || len(back) != 2 || back["apples"] != 3 || back["pears"] != 2 {
		t.Fatalf("decode: %v, %v", back, err)
	}
}

func TestRoundTripsAndRefusesMalformedStates(t *testing.T) {
	counts := map[string]int64{"a": 1, "ünïcode": -7, "": math.MaxInt64}
	good := encode(counts)
	back, err := decode(good)
	if err != nil || !bytes.Equal(encode(back), good) {
		t.Fatalf("round trip: %v, %v", back, err)
	}
	for cut := range len(good) {
		if _, err := decode(good[:cut]); err == nil {
			t.Errorf("a state cut at %d was accepted", cut)
		}
	}
	for name, bad := range map[string][]byte{
		"bad magic":      append([]byte("XXXX"), good[4:]...),
		"trailing bytes": append(bytes.Clone(good), 0),
		"huge count":     append([]byte("BTNC\xff\xff\xff\xff"), good[8:]...),
	} {
		if _, err := decode(bad); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	one := encode(map[string]int64{"key": 3})
	twice := append(bytes.Clone(one), one[8:]...)
	twice[4] = 2
	if _, err := decode(twice); err == nil {
		t.Error("a key twice was accepted")
	}
	badKey := bytes.Clone(one)
	badKey[12] = 0xff
	if _, err := decode(badKey); err == nil {
		t.Error("a key that is not UTF-8 was accepted")
	}
}
