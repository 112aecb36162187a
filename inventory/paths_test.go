package inventory

import "testing"

func TestHostPath(t *testing.T) {
	for _, tc := range []struct {
		rootfs, path, want string
	}{
		{"/", "/run/netns/x", "/run/netns/x"},
		{"/", "/host/run/netns/x", "/host/run/netns/x"},
		{"", "/run/netns/x", "/run/netns/x"},
		{".", "/run/netns/x", "/run/netns/x"},
		{"//", "/run/netns/x", "/run/netns/x"},
		{"/host", "/host/run/x", "/run/x"},
		{"/host", "/host/run/netns/a b", "/run/netns/a b"},
		{"/host", "/host", "/"},
		{"/host", "/host/", "/"},
		{"/host", "/hostile/x", "/hostile/x"},
		{"/host", "/hostx", "/hostx"},
		{"/host", "/run/netns/x", "/run/netns/x"},
		{"/host", "/", "/"},
		{"/host", "/other/host/run/x", "/other/host/run/x"},
		{"/host/", "/host/run/x", "/run/x"},
		{"/host/", "/host", "/"},
		{"/host/", "/hostile/x", "/hostile/x"},
		{"/host//", "/host/run/x", "/run/x"},
		{"/mnt/host", "/mnt/host/run/docker/netns/0123abcd", "/run/docker/netns/0123abcd"},
		{"/mnt/host", "/mnt/hostfs/run/x", "/mnt/hostfs/run/x"},
		{"/mnt/./host", "/mnt/host/run/x", "/run/x"},
	} {
		t.Run(tc.rootfs+" "+tc.path, func(t *testing.T) {
			p := Paths{Procfs: "/proc", Sysfs: "/sys", Rootfs: tc.rootfs}
			if got := p.hostPath(tc.path); got != tc.want {
				t.Errorf("Paths{Rootfs: %q}.hostPath(%q) = %q, want %q", tc.rootfs, tc.path, got, tc.want)
			}
		})
	}
}
