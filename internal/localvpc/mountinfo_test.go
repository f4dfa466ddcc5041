package localvpc

import (
	"slices"
	"testing"
)

func TestParseMountinfo(t *testing.T) {
	text := `27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:2 master:1 - ext4 /dev/vda rw
55 45 0:4 net:[4026532807] /run/netns/a\040b rw - nsfs nsfs rw
`
	got, err := parseMountinfo(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []mount{
		{Point: "/", FSType: "ext4", Shared: 1},
		{Point: "/run/netns", FSType: "ext4", Shared: 2, Master: 1},
		{Point: "/run/netns/a b", FSType: "nsfs"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseMountinfo:\n got %+v\nwant %+v", got, want)
	}
	if _, err := parseMountinfo("27 1 254:0 / / rw\n"); err == nil {
		t.Errorf("a line without a separator parsed")
	}
}

func TestInstancePlan(t *testing.T) {
	for _, c := range []struct {
		name            string
		private, shared []string
		want            []bind
	}{{
		name:    "var/run is run",
		private: []string{"/run", "/run", "/var/lib", "/etc/cni/net.d"},
		shared:  []string{"/run/netns", "/run/netns"},
		want: []bind{
			{Target: "/run", Source: "run"}, {Target: "/var/lib", Source: "var-lib"},
			{Target: "/etc/cni/net.d", Source: "etc-cni-net.d"}, {Target: "/run/netns"},
		},
	}, {
		name:    "var/run of its own",
		private: []string{"/var/run", "/run"},
		shared:  []string{"/var/run/netns", "/run/netns"},
		want: []bind{
			{Target: "/run", Source: "run"}, {Target: "/var/run", Source: "var-run"},
			{Target: "/run/netns"}, {Target: "/var/run/netns"},
		},
	}, {
		name:    "a shared directory nothing hides needs no mount",
		private: []string{"/var/lib"},
		shared:  []string{"/run/netns"},
		want:    []bind{{Target: "/var/lib", Source: "var-lib"}},
	}, {
		name:    "parents first",
		private: []string{"/var/lib/kubelet", "/var/lib"},
		want:    []bind{{Target: "/var/lib", Source: "var-lib"}, {Target: "/var/lib/kubelet", Source: "var-lib-kubelet"}},
	}} {
		if got := instancePlan(c.private, c.shared); !slices.Equal(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}
