package remediate

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Target is the veth a cleanup removes: the device name and the ifindex
// that a fresh inventory verified. Interface names are reused (a CNI that
// hashes pod names recreates the same name for a new pod), so the ifindex
// is what the cleanup acts on; the name only has to still match it.
type Target struct {
	Device string
	Index  int
}

// Outcome is what a cleanup did.
type Outcome string

// The outcomes of [removeVeth].
const (
	// OutcomeDeleted: the veth was detached, deleted and is verified gone.
	OutcomeDeleted Outcome = "deleted"
	// OutcomeGone: there was nothing to delete; someone else was first.
	OutcomeGone Outcome = "gone"
	// OutcomeChanged: the ifindex now names another link (or not a veth):
	// nothing was touched.
	OutcomeChanged Outcome = "changed"
	// OutcomeFailed: the kernel refused, or the link is still there.
	OutcomeFailed Outcome = "failed"
)

// removeVeth is the one place the exporter deletes an interface, shared by
// the webhook and the clean command once every safety gate has passed. It
// reads the link at t.Index again and touches it only if it is still the
// veth t.Device; it detaches it from its master first (a port that is
// already detached is fine), deletes it by ifindex, never by name, and
// verifies it is gone. Deleting either end of a pair deletes both.
func removeVeth(h *netlink.Handle, t Target) (Outcome, error) {
	link, err := h.LinkByIndex(t.Index)
	if isNotFound(err) {
		return OutcomeGone, nil
	}
	if err != nil {
		return OutcomeFailed, fmt.Errorf("read link %d (%s): %w", t.Index, t.Device, err)
	}
	a := link.Attrs()
	if a.Name != t.Device || link.Type() != "veth" {
		return OutcomeChanged, fmt.Errorf("ifindex %d is now %s %q, not veth %q: nothing done", t.Index, link.Type(), a.Name, t.Device)
	}
	if a.MasterIndex != 0 {
		// Detach first, as an operator's `ip link set X nomaster` does:
		// the bridge forgets the port and its FDB entries before the link
		// goes.
		if err := h.LinkSetNoMaster(link); err != nil && !isNotFound(err) {
			return OutcomeFailed, fmt.Errorf("detach %s (ifindex %d) from its master: %w", t.Device, t.Index, err)
		}
	}
	if err := h.LinkDel(link); err != nil {
		if isNotFound(err) {
			return OutcomeGone, nil
		}
		return OutcomeFailed, fmt.Errorf("delete %s (ifindex %d): %w", t.Device, t.Index, err)
	}
	switch _, err := h.LinkByIndex(t.Index); {
	case isNotFound(err):
		return OutcomeDeleted, nil
	case err != nil:
		return OutcomeFailed, fmt.Errorf("verify %s (ifindex %d) is gone: %w", t.Device, t.Index, err)
	default:
		return OutcomeFailed, fmt.Errorf("%s (ifindex %d) is still there after its deletion", t.Device, t.Index)
	}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
