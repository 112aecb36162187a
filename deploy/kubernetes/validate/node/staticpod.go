// Package node runs deploy/kubernetes and the Helm chart on a real
// Kubernetes node: a standalone kubelet (internal/kubelettest) runs the
// DaemonSet's pod, as kustomize or Helm renders it, converted by
// [StaticPod] into a static pod.
package node

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Rendered is what a static pod needs of a kustomization's render.
type Rendered struct {
	DaemonSet  *appsv1.DaemonSet
	ConfigMaps map[string]*corev1.ConfigMap
}

// Render builds the kustomization in dir as `kubectl apply -k` does and
// returns its one DaemonSet and its ConfigMaps (deploy/kubernetes/validate
// decodes every resource strictly; this reads the two kinds it needs).
func Render(dir string) (*Rendered, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	r := &Rendered{ConfigMaps: map[string]*corev1.ConfigMap{}}
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			return nil, err
		}
		if err := r.add(res.GetKind(), b); err != nil {
			return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
		}
	}
	if r.DaemonSet == nil {
		return nil, fmt.Errorf("kustomize build %s: no DaemonSet", dir)
	}
	return r, nil
}

// StaticPod turns the DaemonSet's pod template into a static pod for a
// kubelet without an API server, changing only what a static pod must:
//   - no serviceAccountName: the kubelet refuses static pods that name a
//     service account (the template mounts no token);
//   - each Secret and ConfigMap volume becomes a hostPath directory
//     below filesDir holding the same files, with the volume's
//     defaultMode: static pods may not reference API objects. A
//     ConfigMap's files are its rendered data; a Secret's are
//     secrets[name] (a test's own credentials).
//
// The pod takes the DaemonSet's name, namespace and template labels;
// everything else of the template (containers, args, env, security
// context, probes, host namespaces, other volumes) is as rendered.
func StaticPod(r *Rendered, secrets map[string]map[string][]byte, filesDir string) (*corev1.Pod, error) {
	ds := r.DaemonSet
	spec := ds.Spec.Template.Spec.DeepCopy()
	spec.ServiceAccountName = ""
	spec.DeprecatedServiceAccount = ""
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		var files map[string][]byte
		var mode *int32
		switch {
		case v.Secret != nil:
			s, ok := secrets[v.Secret.SecretName]
			if !ok {
				return nil, fmt.Errorf("volume %s: no content for Secret %s", v.Name, v.Secret.SecretName)
			}
			files, mode = s, v.Secret.DefaultMode
		case v.ConfigMap != nil:
			cm, ok := r.ConfigMaps[v.ConfigMap.Name]
			if !ok {
				return nil, fmt.Errorf("volume %s: ConfigMap %s is not in the render", v.Name, v.ConfigMap.Name)
			}
			files = map[string][]byte{}
			for k, data := range cm.Data {
				files[k] = []byte(data)
			}
			for k, data := range cm.BinaryData {
				files[k] = data
			}
			mode = v.ConfigMap.DefaultMode
		default:
			continue
		}
		dir := filepath.Join(filesDir, v.Name)
		if err := writeFiles(dir, files, mode); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		directory := corev1.HostPathDirectory
		v.VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &directory}}
	}
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      ds.Name,
			Namespace: ds.Namespace,
			Labels:    ds.Spec.Template.Labels,
		},
		Spec: *spec,
	}, nil
}

// writeFiles writes files into a new directory dir, each with mode (the
// volume's defaultMode, 0644 when unset, as the kubelet's).
func writeFiles(dir string, files map[string][]byte, mode *int32) error {
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files[name], perm); err != nil {
			return err
		}
		if err := os.Chmod(p, perm); err != nil {
			return err
		}
	}
	return nil
}

// Manifest is the pod as a static pod manifest (YAML).
func Manifest(pod *corev1.Pod) ([]byte, error) {
	return yaml.Marshal(pod)
}
