package vpceni

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vpcnet/vpcnet/internal/crashpoint"
)

// stepsOf runs c with the step log on and returns the steps it reached.
func stepsOf(t *testing.T, bin binary, w *world, c call) (outcome, []string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "steps")
	c.env = append(c.env, crashpoint.EnvStepLog+"="+log)
	o := bin.run(t, w, c)
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("no step log from %s: %v", c.verb, err)
	}
	return o, strings.Fields(string(data))
}

func killedAt(c call, step string) call {
	c.env = append(slices.Clone(c.env), crashpoint.EnvKillAt+"="+step)
	return c
}

// TestKillAtEachStep SIGKILLs the plugin at every step of ADD and of DEL,
// as a runtime's timeout or a power loss would, and checks that a retried
// ADD returns the same result as an uninterrupted one, and that DEL puts
// the host and the container back exactly as they were.
func TestKillAtEachStep(t *testing.T) {
	bin := newBinary(t)

	// An uninterrupted run: its steps and its result.
	w := newWorld(t, 1)
	e := w.enis[0]
	add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
	o, addSteps := stepsOf(t, bin, w, add)
	reference := normalizeResult(mustSucceed(t, o, "ADD"), w.ctr().Path())
	o, delSteps := stepsOf(t, bin, w, add.as("DEL"))
	mustSucceed(t, o, "DEL")
	wantAdd := []string{stepFound, stepRecorded, stepMoved, stepRenamed, stepMTU, stepAddresses, stepBlackholes, stepUp, stepRoutes}
	if !slices.Equal(addSteps, wantAdd) {
		t.Fatalf("ADD steps = %v, want %v", addSteps, wantAdd)
	}
	if wantDel := []string{stepReleased, stepReturned}; !slices.Equal(delSteps, wantDel) {
		t.Fatalf("DEL steps = %v, want %v", delSteps, wantDel)
	}

	for _, step := range addSteps {
		t.Run("ADD killed at "+step+", ADD again", func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
			if o := bin.run(t, w, killedAt(add, step)); !o.killed {
				t.Fatalf("the plugin was not killed at %s: %+v", step, o)
			}
			out := mustSucceed(t, bin.run(t, w, add), "retried ADD")
			if got := normalizeResult(out, w.ctr().Path()); got != reference {
				t.Errorf("retried ADD result:\n%s\nwant, as without the kill:\n%s", got, reference)
			}
			assertAttached(t, w, w.ctr(), e, dualStack(e))
			mustSucceed(t, bin.run(t, w, add.as("DEL")), "DEL")
			w.assertUnchanged(t, before, "after DEL")
		})
		t.Run("ADD killed at "+step+", then DEL", func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
			if o := bin.run(t, w, killedAt(add, step)); !o.killed {
				t.Fatalf("the plugin was not killed at %s: %+v", step, o)
			}
			mustSucceed(t, bin.run(t, w, add.as("DEL")), "DEL")
			w.assertUnchanged(t, before, "after DEL")
			mustSucceed(t, bin.run(t, w, add.as("DEL")), "second DEL")
			w.assertUnchanged(t, before, "after the second DEL")
		})
	}
	for _, step := range delSteps {
		t.Run("DEL killed at "+step+", DEL again", func(t *testing.T) {
			w := newWorld(t, 1)
			e := w.enis[0]
			before := w.snapshot(t)
			add := w.attachCall(e, 0, e.baseConf("1.0.0").bytes(t))
			mustSucceed(t, bin.run(t, w, add), "ADD")
			if o := bin.run(t, w, killedAt(add.as("DEL"), step)); !o.killed {
				t.Fatalf("the plugin was not killed at %s: %+v", step, o)
			}
			mustSucceed(t, bin.run(t, w, add.as("DEL")), "DEL")
			w.assertUnchanged(t, before, "after DEL")
		})
	}
}

// TestParallelProcesses runs one plugin process per ENI at once, each
// moving its ENI into its own container, then DELs them at once; twice,
// to give races a second chance.
func TestParallelProcesses(t *testing.T) {
	const n = 4
	bin := newBinary(t)
	w := newWorld(t, n)
	before := w.snapshot(t)
	calls := make([]call, n)
	for i, e := range w.enis {
		calls[i] = w.attachCall(e, i, e.baseConf("1.0.0").bytes(t))
	}
	all := func(verb string) {
		t.Helper()
		outcomes := make([]outcome, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range calls {
			wg.Go(func() {
				errs[i] = w.host.Do(func(ns.NetNS) error {
					var err error
					outcomes[i], err = bin.exec(calls[i].as(verb))
					return err
				})
			})
		}
		wg.Wait()
		for i := range calls {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			mustSucceed(t, outcomes[i], fmt.Sprintf("%s of ENI %d", verb, i+1))
		}
	}
	for round := 1; round <= 2; round++ {
		all("ADD")
		for i, e := range w.enis {
			assertAttached(t, w, w.ctrs[i], e, dualStack(e))
			if err := ping(t, w.ctrs[i], e.gw4); err != nil {
				t.Error(err)
			}
		}
		all("DEL")
		w.assertUnchanged(t, before, fmt.Sprintf("after round %d", round))
	}
}
