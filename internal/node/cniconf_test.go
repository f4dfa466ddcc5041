package node

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCNIConflist(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chained := `{"cniVersion":"1.0.0","name":"vpcnet","plugins":[{"type":"vpc-pod"},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	for _, tc := range []struct {
		name, template string
		want           string // in the content, or in the error
		fails          bool
	}{
		{name: "default", want: `"type": "vpc-pod"`},
		{name: "template chaining portmap", template: file("chained.conflist", chained), want: `"portmap"`},
		{name: "template without vpc-pod", template: file("bridge.conflist", `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"bridge"}]}`),
			want: `no plugin of type vpc-pod in "x"`, fails: true},
		{name: "template not JSON", template: file("bad.conflist", `{"plugins":`), want: "bad.conflist", fails: true},
		{name: "template missing", template: filepath.Join(dir, "nothing"), want: "read the CNI config template", fails: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Socket, cfg.CNIConfTemplate = "/run/x/vpcnetd.sock", tc.template
			got, err := cfg.cniConflist()
			if tc.fails {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want one naming %q", err, tc.want)
				}
				return
			}
			if err != nil || !strings.Contains(string(got), tc.want) {
				t.Fatalf("conflist %s, %v; want it to hold %s", got, err, tc.want)
			}
			if tc.template == "" {
				var l struct {
					CNIVersion string              `json:"cniVersion"`
					Plugins    []map[string]string `json:"plugins"`
				}
				if err := json.Unmarshal(got, &l); err != nil || l.CNIVersion != "1.0.0" || len(l.Plugins) != 1 ||
					l.Plugins[0]["socket"] != cfg.Socket || l.Plugins[0]["vethPrefix"] != cfg.Pool.VethPrefix {
					t.Fatalf("default conflist %s (%v): want vpc-pod with the socket and veth prefix", got, err)
				}
			}
			cfg.CNIConfPath = filepath.Join(dir, tc.name, "net.d", DefaultCNIConfName)
			if err := cfg.writeCNIConf(got); err != nil {
				t.Fatal(err)
			}
			if back, err := os.ReadFile(cfg.CNIConfPath); err != nil || string(back) != string(got) {
				t.Fatalf("written %q, %v", back, err)
			}
		})
	}
}

func TestInstallCNI(t *testing.T) {
	from, to := t.TempDir(), t.TempDir()
	put := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(from, name), []byte("#!/bin/sh\necho "+name+"\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	// The default set without vpc-pod: an error naming it, nothing copied.
	put("portmap", 0o755)
	if got, err := InstallCNI(from, to, nil); err == nil || !strings.Contains(err.Error(), "vpc-pod") || len(got) != 0 {
		t.Fatalf("without vpc-pod: %v, %v; want an error naming vpc-pod", got, err)
	}
	put("vpc-pod", 0o755)
	// An old vpc-pod in place is replaced.
	if err := os.WriteFile(filepath.Join(to, "vpc-pod"), []byte("old"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := InstallCNI(from, to, nil)
	if err != nil || !slices.Equal(got, []string{"vpc-pod", "portmap"}) {
		t.Fatalf("InstallCNI = %v, %v; want vpc-pod and portmap (bandwidth and loopback absent, skipped)", got, err)
	}
	for _, n := range got {
		fi, err := os.Stat(filepath.Join(to, n))
		b, _ := os.ReadFile(filepath.Join(to, n))
		if err != nil || fi.Mode().Perm() != 0o755 || !strings.Contains(string(b), "echo "+n) {
			t.Errorf("%s installed as %v (%v): %q", n, fi.Mode(), err, b)
		}
	}
	// Named plugins are all required; names are file names.
	put("notexec", 0o644)
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"bandwidth"}, "read plugin bandwidth"},
		{[]string{"notexec"}, "not an executable file"},
		{[]string{"../etc/passwd"}, "a file name, not a path"},
	} {
		if _, err := InstallCNI(from, to, tc.names); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("InstallCNI(%v) = %v, want an error with %q", tc.names, err, tc.want)
		}
	}
}
