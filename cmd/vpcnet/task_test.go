package main

import (
	"slices"
	"testing"
)

func TestReplaceInstance(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"flag and value", []string{"task", "run", "--instance", "1", "--subnet", "s"}, []string{"task", "run", "--instance", "i-9", "--subnet", "s"}},
		{"flag=value", []string{"task", "run", "--instance=1", "--", "x"}, []string{"task", "run", "--instance=i-9", "--", "x"}},
		{"the command is left alone", []string{"task", "run", "--instance", "1", "--", "prog", "--instance", "1"}, []string{"task", "run", "--instance", "i-9", "--", "prog", "--instance", "1"}},
		{"no instance flag", []string{"task", "gc"}, []string{"task", "gc"}},
	} {
		if got := replaceInstance(tc.args, "1", "i-9"); !slices.Equal(got, tc.want) {
			t.Errorf("%s: replaceInstance = %v, want %v", tc.name, got, tc.want)
		}
	}
}
