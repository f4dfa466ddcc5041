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
	}
}
