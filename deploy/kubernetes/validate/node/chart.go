package node

import (
	"fmt"
	"slices"
	"strings"

	chartcommon "helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// ChartManifests renders the Helm chart in dir as `helm install
// --dry-run` does for release in namespace: values over the chart's,
// checked against its values.schema.json. It returns the manifests, each
// file's documents in the order of the files' names; NOTES.txt is left
// out.
func ChartManifests(dir, release, namespace string, values map[string]any) ([][]byte, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, values,
		chartcommon.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}, chartcommon.DefaultCapabilities, false)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range files {
		if strings.HasSuffix(name, ".yaml") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var docs [][]byte
	for _, name := range names {
		for doc := range strings.SplitSeq(files[name], "\n---") {
			var v any
			if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			if v != nil {
				docs = append(docs, []byte(doc))
			}
		}
	}
	return docs, nil
}

// RenderChart is [Render] for the Helm chart in dir, installed as release
// in namespace with values.
func RenderChart(dir, release, namespace string, values map[string]any) (*Rendered, error) {
	docs, err := ChartManifests(dir, release, namespace, values)
	if err != nil {
		return nil, err
	}
	r := &Rendered{ConfigMaps: map[string]*corev1.ConfigMap{}}
	for _, doc := range docs {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			return nil, err
		}
		if err := r.add(kind.Kind, doc); err != nil {
			return nil, fmt.Errorf("chart %s: %w", dir, err)
		}
	}
	if r.DaemonSet == nil {
		return nil, fmt.Errorf("chart %s: no DaemonSet", dir)
	}
	return r, nil
}

// add decodes doc, of kind, into r if r holds that kind.
func (r *Rendered) add(kind string, doc []byte) error {
	switch kind {
	case "DaemonSet":
		if r.DaemonSet != nil {
			return fmt.Errorf("more than one DaemonSet")
		}
		r.DaemonSet = &appsv1.DaemonSet{}
		if err := yaml.UnmarshalStrict(doc, r.DaemonSet); err != nil {
			return fmt.Errorf("DaemonSet: %w", err)
		}
	case "ConfigMap":
		cm := &corev1.ConfigMap{}
		if err := yaml.UnmarshalStrict(doc, cm); err != nil {
			return fmt.Errorf("ConfigMap: %w", err)
		}
		r.ConfigMaps[cm.Name] = cm
	}
	return nil
}
