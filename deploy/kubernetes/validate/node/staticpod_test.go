package node

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestStaticPod converts both renders: the static pod is the DaemonSet's
// template with no serviceAccountName, and each Secret or ConfigMap volume
// a hostPath directory holding its files with the volume's mode; nothing
// else differs.
func TestStaticPod(t *testing.T) {
	for _, dir := range []string{"base", "remediation"} {
		t.Run(dir, func(t *testing.T) {
			r, err := Render(filepath.Join(repoRoot, "deploy/kubernetes", dir))
			if err != nil {
				t.Fatal(err)
			}
			secrets := map[string]map[string][]byte{
				"veth-exporter-remediate": {"token": []byte("t0ken\n")},
				"veth-exporter-tls":       {"tls.crt": []byte("c"), "tls.key": []byte("k"), "ca.crt": []byte("a")},
			}
			files := t.TempDir()
			pod, err := StaticPod(r, secrets, files)
			if err != nil {
				t.Fatal(err)
			}
			tpl := r.DaemonSet.Spec.Template
			if pod.Name != r.DaemonSet.Name || pod.Namespace != r.DaemonSet.Namespace || !reflect.DeepEqual(pod.Labels, tpl.Labels) {
				t.Errorf("pod %s/%s labels %v, want the DaemonSet's name, namespace and template labels", pod.Namespace, pod.Name, pod.Labels)
			}
			if pod.Spec.ServiceAccountName != "" {
				t.Errorf("serviceAccountName %q kept", pod.Spec.ServiceAccountName)
			}
			want := tpl.Spec.DeepCopy()
			want.ServiceAccountName = ""
			converted := 0
			for i, v := range want.Volumes {
				got := pod.Spec.Volumes[i]
				switch {
				case v.Secret != nil || v.ConfigMap != nil:
					converted++
					if got.HostPath == nil || got.HostPath.Path != filepath.Join(files, v.Name) {
						t.Errorf("volume %s: %+v, want a hostPath below %s", v.Name, got.VolumeSource, files)
						continue
					}
					entries, err := os.ReadDir(got.HostPath.Path)
					if err != nil || len(entries) == 0 {
						t.Errorf("volume %s: no files (%v)", v.Name, err)
					}
					if v.Secret != nil {
						for _, e := range entries {
							if st, err := os.Stat(filepath.Join(got.HostPath.Path, e.Name())); err != nil || st.Mode().Perm() != os.FileMode(*v.Secret.DefaultMode) {
								t.Errorf("secret file %s: mode %v (%v), want %o", e.Name(), st.Mode(), err, *v.Secret.DefaultMode)
							}
						}
					}
					want.Volumes[i] = got
				default:
					if !reflect.DeepEqual(got, v) {
						t.Errorf("volume %s changed: %+v, want %+v", v.Name, got, v)
					}
				}
			}
			if !reflect.DeepEqual(&pod.Spec, want) {
				t.Errorf("the static pod's spec differs from the template beyond the service account and the volumes")
			}
			if dir == "remediation" && converted != 3 {
				t.Errorf("%d Secret and ConfigMap volumes converted, want 3", converted)
			}
			if _, err := StaticPod(r, nil, t.TempDir()); dir == "remediation" && err == nil {
				t.Error("no content for the overlay's Secrets: converted anyway")
			}
		})
	}
}
