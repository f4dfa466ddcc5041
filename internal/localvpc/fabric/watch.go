package fabric

import (
	"context"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vpcnet/vpcnet/internal/netops"
)

// A Watcher reports ENIs whose device vanished from the fabric of a local
// VPC without Apply or Destroy removing it. That happens when the ENI's
// instance end had been moved into another namespace (a task's) which was
// then deleted: a veth dies with either of its namespaces. On EC2 the
// physical ENI would return to its instance; here the control plane calls
// Apply, which builds the device again, as eth<N> in the instance.
//
// A Watcher is subscribed when NewWatcher returns, so the control plane can
// subscribe, Apply, then Run without missing a loss in between. It follows
// the fabric namespace that existed when it was created, and keeps that
// namespace alive until Close.
type Watcher struct {
	path    string
	updates chan netlink.LinkUpdate
	done    chan struct{}
	once    sync.Once

	mu  sync.Mutex
	err error // why notifications ended
}

// NewWatcher subscribes to the device notifications of the fabric of the
// local VPC name, which must exist (Apply first).
func NewWatcher(name string) (*Watcher, error) {
	path := netops.NamedNSPath(FabricNamespace(name))
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open the fabric namespace of local VPC %s: %w", name, err)
	}
	defer h.Close() // the subscription socket holds the namespace itself
	w := &Watcher{path: path, updates: make(chan netlink.LinkUpdate, 256), done: make(chan struct{})}
	err = netlink.LinkSubscribeWithOptions(w.updates, w.done, netlink.LinkSubscribeOptions{
		Namespace:         &h,
		ReceiveBufferSize: 1 << 20,
		ErrorCallback: func(err error) {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("failed to watch the devices of %s: %w", path, err)
	}
	return w, nil
}

// Run calls lost, from Run's goroutine, once for each ENI whose device
// vanished. It returns nil when ctx ends or the Watcher is closed, and an
// error when notifications fail (they may have overflowed: Apply, and watch
// again).
func (w *Watcher) Run(ctx context.Context, lost func(interfaceID string)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.updates:
			if !ok {
				select {
				case <-w.done:
					return nil
				default:
				}
				w.mu.Lock()
				defer w.mu.Unlock()
				return fmt.Errorf("device notifications of %s ended: %v", w.path, w.err)
			}
			if u.Header.Type != unix.RTM_DELLINK || u.Link == nil {
				continue
			}
			if id, ok := interfaceOfAlias(u.Link.Attrs().Alias); ok {
				lost(id)
			}
		}
	}
}

// Close ends the subscription.
func (w *Watcher) Close() { w.once.Do(func() { close(w.done) }) }
