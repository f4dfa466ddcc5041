package vpceni

import (
	"encoding/hex"
	"net"
	"strconv"
	"strings"
)

// hostRecord is what the ENI was in the host namespace before vpc-eni
// touched it, so that DEL, or the undo of a failed ADD, can give it back as
// it was. It lives on the link itself, in its alias (IFLA_IFALIAS), which
// the kernel keeps across namespace moves: it survives a crash of the
// plugin and needs no file on the host, and whoever holds the link holds
// its record.
type hostRecord struct {
	Name  string // interface name in the host namespace
	MTU   int    // 0: unknown, leave the MTU alone
	Alias string // the alias the link had, usually none
}

// recordTag starts every alias vpc-eni writes. Interface names cannot hold
// white space, so the fields after it split cleanly; the old alias comes
// last and may hold anything.
const recordTag = "vpc-eni"

// maxAliasLen is the longest alias the kernel takes (IFALIASZ - 1).
const maxAliasLen = 255

// String encodes the record as an alias, e.g. "vpc-eni host=eth1 mtu=9001".
// An old alias too long to fit beside the rest is left out: losing it is
// better than losing the host name.
func (r hostRecord) String() string {
	s := recordTag + " host=" + r.Name + " mtu=" + strconv.Itoa(r.MTU)
	if r.Alias != "" && len(s)+len(" alias=")+len(r.Alias) <= maxAliasLen {
		s += " alias=" + r.Alias
	}
	return s
}

// parseHostRecord decodes an alias written by String. ok is false for any
// other alias, which then belongs to someone else.
func parseHostRecord(alias string) (rec hostRecord, ok bool) {
	rest, found := strings.CutPrefix(alias, recordTag+" ")
	if !found {
		return hostRecord{}, false
	}
	for rest != "" {
		var field string
		if strings.HasPrefix(rest, "alias=") {
			rec.Alias, rest = strings.TrimPrefix(rest, "alias="), ""
			break
		}
		field, rest, _ = strings.Cut(rest, " ")
		key, val, _ := strings.Cut(field, "=")
		switch key {
		case "host":
			rec.Name = val
		case "mtu":
			mtu, err := strconv.Atoi(val)
			if err != nil {
				return hostRecord{}, false
			}
			rec.MTU = mtu
		}
	}
	return rec, rec.Name != ""
}

// fallbackHostName names an ENI whose host name is unknown (no record) or
// taken: "eni" and the MAC in hex, 15 bytes, the longest name Linux takes,
// and unique as the MAC is.
func fallbackHostName(mac net.HardwareAddr) string {
	return "eni" + hex.EncodeToString(mac)
}
