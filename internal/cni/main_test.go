package cni

import (
	"encoding/json"
	"testing"
)

func TestWithDefaultName(t *testing.T) {
	for _, tc := range []struct {
		in       string
		wantName string // "" = unchanged
	}{
		{`{"type":"ecs-bridge","cniVersion":"0.3.0","bridge":"ecs-bridge"}`, "ecs-bridge"},
		{`{"type":"vpc-eni","name":""}`, "vpc-eni"},
		{`{"type":"vpc-eni","name":"tasks"}`, ""},
		{`{"name":""}`, ""},
		{`not json`, ""},
		// A key given twice survives, for the decoder to refuse.
		{`{"type":"ecs-eni","mac":"a","mac":"b"}`, "ecs-eni"},
	} {
		out, changed := WithDefaultName([]byte(tc.in))
		if changed != (tc.wantName != "") {
			t.Errorf("%s: changed = %v", tc.in, changed)
			continue
		}
		if !changed {
			continue
		}
		var got struct{ Name, Bridge string }
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if got.Name != tc.wantName {
			t.Errorf("%s: name = %q, want %q", tc.in, got.Name, tc.wantName)
		}
		if dup, _ := duplicateKey([]byte(tc.in)); dup != "" {
			if again, _ := duplicateKey(out); again != dup {
				t.Errorf("%s: the duplicate %q is gone from %s", tc.in, dup, out)
			}
		}
	}
	// An empty name is not replaced when that would hide a duplicate.
	if out, changed := WithDefaultName([]byte(`{"type":"ecs-eni","name":"","mac":"a","mac":"b"}`)); changed {
		t.Errorf("rewrote a config with a duplicate key: %s", out)
	}
}
