package remediate

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// MaxDeviceNameLen is the longest interface name the kernel accepts, in
// bytes: IFNAMSIZ (16) less the terminating NUL.
const MaxDeviceNameLen = 15

// ValidDeviceName reports why name cannot be a Linux interface name, or nil
// if it can. It is the kernel's dev_valid_name: 1 to [MaxDeviceNameLen]
// bytes, not "." or "..", and no NUL, '/', ':' or byte the kernel's
// isspace accepts. Every other name is accepted as the kernel accepts it,
// multibyte UTF-8 and Unicode spaces (U+2003, which the kernel takes as
// plain bytes) included: a leftover can have any name the kernel gave a
// link, deletions go by a verified ifindex, and what shows a name to a
// human quotes one that could be mistaken for something else (see
// web.DeviceText).
func ValidDeviceName(name string) error {
	switch {
	case name == "":
		return errors.New("device name is empty")
	case len(name) > MaxDeviceNameLen:
		return fmt.Errorf("device name %s is %d bytes, longer than the kernel's limit of %d",
			quoteTruncated(name), len(name), MaxDeviceNameLen)
	case name == "." || name == "..":
		// The kernel refuses both: /sys/class/net/<name> would be the
		// directory itself or its parent.
		return fmt.Errorf("device name %q is reserved", name)
	}
	for i := 0; i < len(name); i++ {
		b := name[i]
		var what string
		switch {
		case b == 0:
			what = "a NUL byte"
		case b == '/':
			// A path separator under /sys/class/net and /proc/sys/net.
			what = "'/'"
		case b == ':':
			// The separator of the old "eth0:1" alias names.
			what = "':'"
		case kernelIsSpace(b):
			what = "whitespace"
		default:
			continue
		}
		return fmt.Errorf("device name %q contains %s (byte 0x%02x) at offset %d", name, what, b, i)
	}
	return nil
}

// kernelIsSpace is the kernel's isspace (lib/ctype.c), which dev_valid_name
// applies to each byte: '\t', '\n', '\v', '\f', '\r', ' ' and 0xA0, the
// Latin-1 no-break space. The last one means the kernel refuses any UTF-8
// character whose encoding holds the byte 0xA0 ("à" is C3 A0).
func kernelIsSpace(b byte) bool {
	return b == ' ' || (b >= '\t' && b <= '\r') || b == 0xA0
}

// ParseIfindex parses the optional ifindex label of an alert. It accepts
// only the canonical decimal form an exporter writes: ASCII digits, no
// sign, no leading zero, no spaces, from 1 to 2³¹-1 (the kernel's
// ifindex is a positive int). Anything else is an error saying why, so a
// label that merely looks like a number never selects a link.
func ParseIfindex(s string) (int, error) {
	if s == "" {
		return 0, errors.New("ifindex is empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("ifindex %s is not a plain decimal number (offset %d)",
				quoteTruncated(s), i)
		}
	}
	if s == "0" {
		return 0, errors.New(`ifindex "0" is not an interface: the kernel numbers them from 1`)
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("ifindex %s has a leading zero", quoteTruncated(s))
	}
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		// Only a range error is left: s is all digits.
		return 0, fmt.Errorf("ifindex %s is out of range 1..%d", quoteTruncated(s), math.MaxInt32)
	}
	return int(n), nil
}

// quoteTruncated quotes s for an error message, keeping only its start when
// it is long: label values come from the network and have no size limit
// but the body's.
func quoteTruncated(s string) string {
	const keep = 32
	if len(s) <= keep {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%q… (%d bytes)", s[:keep], len(s))
}
