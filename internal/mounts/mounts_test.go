package mounts

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	text := `27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
45 27 254:0 /run/netns /run/netns rw,relatime shared:2 master:1 - ext4 /dev/vda rw
55 45 0:4 net:[4026532807] /run/netns/a\040b rw - nsfs nsfs rw
`
	got, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Point: "/", FSType: "ext4", Shared: 1},
		{Point: "/run/netns", FSType: "ext4", Shared: 2, Master: 1},
		{Point: "/run/netns/a b", FSType: "nsfs"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", got, want)
	}
	if _, err := Parse("27 1 254:0 / / rw\n"); err == nil {
		t.Errorf("a line without a separator parsed")
	}
}

// A lenient caller (the task sandbox reads the host's table) gets every
// good line even when one is malformed.
func TestParseKeepsGoodLines(t *testing.T) {
	got, err := Parse("22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\ngarbage\n31 22 8:2 / /mnt/with\\040space rw - xfs /dev/sdb rw\n")
	if err == nil {
		t.Error("a garbage line was not reported")
	}
	want := []Mount{{Point: "/", FSType: "ext4", Shared: 1}, {Point: "/mnt/with space", FSType: "xfs"}}
	if !slices.Equal(got, want) {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
}
