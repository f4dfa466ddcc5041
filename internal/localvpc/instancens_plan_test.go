package localvpc

import (
	"slices"
	"testing"
)

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
