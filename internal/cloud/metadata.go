package cloud

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// ErrNotInMetadata is the error (under errors.Is) for a path instance
// metadata does not have: an ENI that is not (or no longer) attached.
var ErrNotInMetadata = errors.New("not in instance metadata")

// InterfaceMetadata is what instance metadata says about one ENI of the
// instance. It lags EC2: an address EC2 has just assigned may be missing
// for a while, and one just unassigned may still be listed.
type InterfaceMetadata struct {
	MAC              net.HardwareAddr
	DeviceNumber     int
	NetworkCard      int
	InterfaceID      string
	LocalIPv4s       []netip.Addr   // primary first
	IPv4Prefixes     []netip.Prefix // delegated /28s
	IPv6s            []netip.Addr
	SubnetID         string
	SubnetCIDR       netip.Prefix
	VPCID            string
	VPCCIDRs         []netip.Prefix
	SecurityGroupIDs []string
}

// InterfacesMetadata reads every ENI of the instance from metadata
// (network/interfaces/macs/), ordered by network card and device number.
// An ENI that goes away while it is being read is left out.
func (c *Client) InterfacesMetadata(ctx context.Context) ([]InterfaceMetadata, error) {
	list, err := c.metadata(ctx, "network/interfaces/macs/")
	if err != nil {
		return nil, err
	}
	var out []InterfaceMetadata
	for _, line := range strings.Fields(list) {
		im, err := c.InterfaceMetadata(ctx, strings.TrimSuffix(line, "/"))
		if errors.Is(err, ErrNotInMetadata) {
			continue // detached since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b InterfaceMetadata) int {
		return cmp.Or(cmp.Compare(a.NetworkCard, b.NetworkCard), cmp.Compare(a.DeviceNumber, b.DeviceNumber))
	})
	return out, nil
}

// InterfaceMetadata reads one ENI of the instance, by MAC, from metadata.
// Lists that metadata leaves out when empty (ipv4-prefix, ipv6s) are
// empty; a field every ENI has that is missing is ErrNotInMetadata.
func (c *Client) InterfaceMetadata(ctx context.Context, mac string) (InterfaceMetadata, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return InterfaceMetadata{}, fmt.Errorf("metadata lists a bad MAC %q: %w", mac, err)
	}
	im := InterfaceMetadata{MAC: hw}
	base := "network/interfaces/macs/" + mac + "/"
	r := metadataReader{c: c, ctx: ctx, base: base}
	im.DeviceNumber = r.integer("device-number", true)
	im.NetworkCard = r.integer("network-card", false) // absent on instances without network cards
	im.InterfaceID = r.text("interface-id", true)
	im.LocalIPv4s = r.addrs("local-ipv4s", true)
	im.IPv4Prefixes = r.prefixes("ipv4-prefix", false)
	im.IPv6s = r.addrs("ipv6s", false)
	im.SubnetID = r.text("subnet-id", true)
	if p := r.prefixes("subnet-ipv4-cidr-block", true); len(p) > 0 {
		im.SubnetCIDR = p[0]
	}
	im.VPCID = r.text("vpc-id", true)
	im.VPCCIDRs = r.prefixes("vpc-ipv4-cidr-blocks", true)
	im.SecurityGroupIDs = strings.Fields(r.text("security-group-ids", true))
	if r.err != nil {
		return InterfaceMetadata{}, fmt.Errorf("metadata of ENI %s: %w", mac, r.err)
	}
	return im, nil
}

// metadataReader reads the values below one path, keeping the first error.
type metadataReader struct {
	c    *Client
	ctx  context.Context
	base string
	err  error
}

func (r *metadataReader) text(name string, required bool) string {
	if r.err != nil {
		return ""
	}
	v, err := r.c.metadata(r.ctx, r.base+name)
	if errors.Is(err, ErrNotInMetadata) && !required {
		return ""
	}
	r.err = err
	return v
}

func (r *metadataReader) integer(name string, required bool) int {
	v := r.text(name, required)
	if v == "" || r.err != nil {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.err = fmt.Errorf("%s %q: %w", name, v, err)
	}
	return n
}

func (r *metadataReader) addrs(name string, required bool) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Fields(r.text(name, required)) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			r.err = fmt.Errorf("%s: %w", name, err)
			return nil
		}
		out = append(out, a)
	}
	return out
}

func (r *metadataReader) prefixes(name string, required bool) []netip.Prefix {
	var out []netip.Prefix
	for _, f := range strings.Fields(r.text(name, required)) {
		p, err := netip.ParsePrefix(f)
		if err != nil {
			r.err = fmt.Errorf("%s: %w", name, err)
			return nil
		}
		out = append(out, p)
	}
	return out
}

// metadata reads one metadata value, trimmed. A path metadata does not
// have (HTTP 404) is ErrNotInMetadata.
func (c *Client) metadata(ctx context.Context, path string) (string, error) {
	out, err := c.IMDS.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		var status interface{ HTTPStatusCode() int }
		if errors.As(err, &status) && status.HTTPStatusCode() == http.StatusNotFound {
			return "", fmt.Errorf("metadata %s: %w", path, ErrNotInMetadata)
		}
		return "", fmt.Errorf("failed to read metadata %s: %w", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		return "", fmt.Errorf("failed to read metadata %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}
