package version

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestPrintIsJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := Print(&buf); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("--version output %q is not JSON: %v", buf.String(), err)
	}
	for _, k := range []string{"version", "gitShortHash", "dirty"} {
		if _, ok := got[k]; !ok {
			t.Errorf("--version output lacks %q: %s", k, buf.String())
		}
	}
	if _, ok := got["dirty"].(bool); !ok {
		t.Errorf("dirty should be a JSON boolean: %s", buf.String())
	}
}
