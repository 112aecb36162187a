package remediate

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidDeviceName(t *testing.T) {
	for _, tt := range []struct {
		name    string
		wantErr string // a part of the error; empty when the name is valid
	}{
		{name: "veth1a2b3c4", wantErr: ""},
		{name: "a", wantErr: ""},
		{name: "eth0", wantErr: ""},
		{name: "lxc-health_1.2", wantErr: ""},
		{name: strings.Repeat("v", 15), wantErr: ""},
		{name: "veth😀", wantErr: ""},                // 8 bytes: the kernel counts bytes, not characters
		{name: "vethé😀😀x", wantErr: ""},             // 8 characters, 15 bytes
		{name: "vethé😀😀xy", wantErr: "is 16 bytes"}, // 9 characters, 16 bytes
		{name: "veth\xff\xfe", wantErr: ""},         // not UTF-8, but the kernel takes any other byte
		{name: "veth\x01", wantErr: ""},             // a control byte that is not in the kernel's isspace
		{name: "...", wantErr: ""},                  // only "." and ".." are reserved
		{name: ".x", wantErr: ""},
		{name: "", wantErr: "empty"},
		{name: strings.Repeat("v", 16), wantErr: "is 16 bytes, longer than the kernel's limit of 15"},
		{name: strings.Repeat("v", 1<<20), wantErr: "is 1048576 bytes"},
		{name: ".", wantErr: "reserved"},
		{name: "..", wantErr: "reserved"},
		{name: "../x", wantErr: "'/'"},
		{name: "a/b", wantErr: "'/' (byte 0x2f) at offset 1"},
		{name: "/", wantErr: "'/'"},
		{name: "eth0:1", wantErr: "':' (byte 0x3a) at offset 4"},
		{name: "\x00", wantErr: "NUL"},
		{name: "veth\x00x", wantErr: "NUL byte (byte 0x00) at offset 4"},
		{name: " ", wantErr: "whitespace (byte 0x20) at offset 0"},
		{name: " veth", wantErr: "whitespace"},
		{name: "veth0 ", wantErr: "whitespace"},
		{name: "eth0\n", wantErr: "whitespace (byte 0x0a) at offset 4"},
		{name: "a\tb", wantErr: "whitespace (byte 0x09)"},
		{name: "a\vb", wantErr: "whitespace (byte 0x0b)"},
		{name: "a\fb", wantErr: "whitespace (byte 0x0c)"},
		{name: "a\rb", wantErr: "whitespace (byte 0x0d)"},
		{name: "a\u00a0b", wantErr: "whitespace (byte 0xa0) at offset 2"}, // C2 A0: the kernel's isspace(0xA0)
		{name: "vethà", wantErr: "whitespace (byte 0xa0)"},                // C3 A0: the kernel refuses it too
		// The kernel takes Unicode spaces as plain bytes: so does the
		// exporter (a leftover can have any name the kernel gave it).
		{name: "a\u2003b"},
		{name: "a\u3000b"},
		{name: "a\u0085b"}, // C2 85: no kernel space byte
		{name: "a\u2028b"},
	} {
		t.Run(strconv.Quote(truncateForName(tt.name)), func(t *testing.T) {
			err := ValidDeviceName(tt.name)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ValidDeviceName(%q) = %v, want nil", tt.name, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("ValidDeviceName(%q) = nil, want an error containing %q", tt.name, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("ValidDeviceName(%q) = %v, want an error containing %q", tt.name, err, tt.wantErr)
			}
		})
	}
}

// TestValidDeviceNameQuotesLongNames checks that a hostile label cannot
// make an error message (and so a log line or a response) arbitrarily long.
func TestValidDeviceNameQuotesLongNames(t *testing.T) {
	for _, n := range []int{16, 100, 1 << 20} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			err := ValidDeviceName(strings.Repeat("x", n))
			if err == nil {
				t.Fatalf("ValidDeviceName(%d bytes) = nil, want an error", n)
			}
			if len(err.Error()) > 120 {
				t.Errorf("ValidDeviceName(%d bytes) error is %d bytes long: %q", n, len(err.Error()), err)
			}
		})
	}
}

func TestParseIfindex(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    int
		wantErr string // a part of the error; empty when in is valid
	}{
		{in: "1", want: 1},
		{in: "7", want: 7},
		{in: "42", want: 42},
		{in: "1000000", want: 1000000},
		{in: "2147483647", want: 2147483647},
		{in: "", wantErr: "empty"},
		{in: "0", wantErr: "numbers them from 1"},
		{in: "00", wantErr: "leading zero"},
		{in: "05", wantErr: "leading zero"},
		{in: "-1", wantErr: "not a plain decimal number (offset 0)"},
		{in: "+5", wantErr: "not a plain decimal number (offset 0)"},
		{in: " 7", wantErr: "not a plain decimal number (offset 0)"},
		{in: "7 ", wantErr: "not a plain decimal number (offset 1)"},
		{in: "7\n", wantErr: "not a plain decimal number"},
		{in: "1e3", wantErr: "not a plain decimal number (offset 1)"},
		{in: "0x1f", wantErr: "not a plain decimal number"},
		{in: "1_000", wantErr: "not a plain decimal number"},
		{in: "1.0", wantErr: "not a plain decimal number"},
		{in: "٣", wantErr: "not a plain decimal number"}, // ARABIC-INDIC DIGIT THREE
		{in: "2147483648", wantErr: "out of range 1..2147483647"},
		{in: "4294967297", wantErr: "out of range"},
		{in: "99999999999999999999999", wantErr: "out of range"},
		{in: strings.Repeat("9", 1<<16), wantErr: "out of range"},
	} {
		t.Run(strconv.Quote(truncateForName(tt.in)), func(t *testing.T) {
			got, err := ParseIfindex(tt.in)
			switch {
			case tt.wantErr == "" && (err != nil || got != tt.want):
				t.Errorf("ParseIfindex(%q) = %d, %v, want %d, nil", tt.in, got, err, tt.want)
			case tt.wantErr != "" && err == nil:
				t.Errorf("ParseIfindex(%q) = %d, nil, want an error containing %q", tt.in, got, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("ParseIfindex(%q) = %d, %v, want an error containing %q", tt.in, got, err, tt.wantErr)
			case tt.wantErr != "" && got != 0:
				t.Errorf("ParseIfindex(%q) = %d, %v, want 0 with the error", tt.in, got, err)
			}
		})
	}
}

// kernelDevValidName is dev_valid_name from net/core/dev.c, transcribed
// byte for byte, as an oracle independent of [ValidDeviceName]'s code.
func kernelDevValidName(name string) bool {
	const ifnamsiz = 16
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		// A C string ends at its first NUL: a Go string holding one is
		// not a name the kernel could have been given.
		return false
	}
	if len(name) >= ifnamsiz || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '/', ':', '\t', '\n', '\v', '\f', '\r', ' ', 0xA0:
			return false
		}
	}
	return true
}

func FuzzValidDeviceName(f *testing.F) {
	for _, s := range []string{"veth1a2b3c4", "", ".", "..", "../x", "a/b", "eth0:1", "eth0\n", "\x00",
		" ", strings.Repeat("v", 15), strings.Repeat("v", 16), "veth😀", "vethà", "a\u2003b", "veth\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidDeviceName(name)
		if want := kernelDevValidName(name); (err == nil) != want {
			t.Fatalf("ValidDeviceName(%q) = %v, but dev_valid_name says valid=%t", name, err, want)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ValidDeviceName(%q) returned an empty error", name)
			}
			return
		}
		if len(name) < 1 || len(name) > MaxDeviceNameLen {
			t.Fatalf("ValidDeviceName(%q) = nil for a name of %d bytes", name, len(name))
		}
		if i := strings.IndexAny(name, "/:\x00\t\n\v\f\r "); i >= 0 || strings.IndexByte(name, 0xA0) >= 0 {
			t.Fatalf("ValidDeviceName(%q) = nil for a name with a forbidden byte", name)
		}
	})
}

func FuzzParseIfindex(f *testing.F) {
	for _, s := range []string{"1", "7", "2147483647", "2147483648", "0", "05", "-1", "+5", " 7", "1e3", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseIfindex(s)
		canonical := s != "" && s[0] != '0' && len(s) <= 10 && strings.Trim(s, "0123456789") == ""
		if canonical {
			v, _ := strconv.ParseInt(s, 10, 64)
			canonical = v <= 1<<31-1
		}
		if (err == nil) != canonical {
			t.Fatalf("ParseIfindex(%q) = %d, %v, want an error: %t", s, n, err, !canonical)
		}
		if err == nil && strconv.Itoa(n) != s {
			t.Fatalf("ParseIfindex(%q) = %d, which prints as %q", s, n, strconv.Itoa(n))
		}
		if err != nil && n != 0 {
			t.Fatalf("ParseIfindex(%q) = %d, %v, want 0 with the error", s, n, err)
		}
	})
}

// truncateForName keeps subtest names short for inputs of megabytes.
func truncateForName(s string) string {
	if len(s) <= 20 {
		return s
	}
	cut := 20
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
