package collector

import (
	"bufio"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/veth-exporter/veth_exporter/inventory"
)

// TextGatherer is a prometheus.Gatherer whose families can also be
// gathered ready to be written in the Prometheus text format, which is
// what Prometheus scrapes unless told otherwise.
//
// Written as text, the per-veth families skip what the data model costs
// on a node of thousands of veths: a dto.Metric, its label pairs and its
// value for each of tens of thousands of series, copied once more by
// expfmt's name escaping, then each label name checked and each value run
// through a strings.Replacer as they are written. The text is the same,
// byte for byte.
type TextGatherer interface {
	prometheus.Gatherer
	GatherText() ([]TextFamily, error)
}

// TextFamily is one metric family of a scrape, to be written in the text
// format: either as data, by expfmt, or, for a per-veth family, directly.
type TextFamily struct {
	name string
	// mf is the family as data; nil for a per-veth family.
	mf *dto.MetricFamily
	// veth and veths are a per-veth family and the veths to write in it,
	// sorted by name, at least one of which has a series in it.
	veth  *vethFamily
	veths []*inventory.Veth
}

// Name is the family's name.
func (f TextFamily) Name() string { return f.name }

// WriteText writes the family to w: through enc, an encoder of a text
// format writing to w, or directly, as enc would write it. The per-veth
// families and their label names need no escaping in any text format
// (they are valid legacy names), and label values are written as expfmt
// writes them.
func (f TextFamily) WriteText(w *bufio.Writer, enc expfmt.Encoder) error {
	if f.mf != nil {
		return enc.Encode(f.mf)
	}
	vf := f.veth
	line := w.AvailableBuffer()
	line = append(line, "# HELP "...)
	line = append(line, vf.name...)
	line = append(line, ' ')
	line = appendEscaped(line, vf.help, false)
	line = append(line, "\n# TYPE "...)
	line = append(line, vf.name...)
	line = append(line, " gauge\n"...)
	if _, err := w.Write(line); err != nil {
		return err
	}
	for _, v := range f.veths {
		value, ok := vf.value(v)
		if !ok {
			continue
		}
		line = w.AvailableBuffer()
		line = append(line, vf.name...)
		line = appendVethLabels(line, vf.labels, v)
		line = append(line, ' ')
		line = appendFloat(line, value)
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	return nil
}

// vethText keeps the per-veth families that have a series to be written
// as text.
func (b *builder) vethText(veths []*inventory.Veth) {
	for i := range vethFamilies {
		vf := &vethFamilies[i]
		// Empty families are left out, as the registry leaves them out.
		if slices.ContainsFunc(veths, func(v *inventory.Veth) bool { _, ok := vf.value(v); return ok }) {
			b.vethFamilies = append(b.vethFamilies, TextFamily{name: vf.name, veth: vf, veths: veths})
		}
	}
}

// textResult is result for [Collector.GatherText].
func (b *builder) textResult() []TextFamily {
	mfs := b.result()
	out := make([]TextFamily, 0, len(mfs)+len(b.vethFamilies))
	for _, mf := range mfs {
		out = append(out, TextFamily{name: mf.GetName(), mf: mf})
	}
	out = append(out, b.vethFamilies...)
	slices.SortFunc(out, func(a, b TextFamily) int { return strings.Compare(a.name, b.name) })
	return out
}

// appendVethLabels appends the labels of v's series in a family with the
// set, as vethLabels makes them, in braces.
func appendVethLabels(line []byte, set labelSet, v *inventory.Veth) []byte {
	line = append(line, `{device="`...)
	line = appendEscaped(line, v.Name, true)
	line = append(line, '"')
	switch set {
	case infoLabels:
		line = append(line, `,ifindex="`...)
		line = strconv.AppendInt(line, int64(v.Index), 10)
		line = append(line, `",master="`...)
		line = appendEscaped(line, v.Master, true)
		line = append(line, `",peer_ifindex="`...)
		line = strconv.AppendInt(line, int64(v.PeerIndex), 10)
		line = append(line, `",peer_netnsid="`...)
		if v.PeerNetNSID >= 0 {
			line = strconv.AppendInt(line, int64(v.PeerNetNSID), 10)
		}
		line = append(line, '"')
	case ownerLabels:
		line = appendOwnerLabels(line, v.Owner)
	case lastOwnerLabels:
		line = appendOwnerLabels(line, v.LastOwner)
	case verdictLabels:
		line = append(line, `,reason="`...)
		line = appendEscaped(line, string(v.Reason), true)
		line = append(line, `",verdict="`...)
		line = appendEscaped(line, string(v.Verdict), true)
		line = append(line, '"')
	}
	return append(line, '}')
}

func appendOwnerLabels(line []byte, o *inventory.Owner) []byte {
	line = append(line, `,id="`...)
	line = appendEscaped(line, o.ID, true)
	line = append(line, `",kind="`...)
	line = appendEscaped(line, string(o.Kind), true)
	line = append(line, `",name="`...)
	line = appendEscaped(line, o.Name, true)
	line = append(line, `",pod_name="`...)
	line = appendEscaped(line, o.PodName, true)
	line = append(line, `",pod_namespace="`...)
	line = appendEscaped(line, o.PodNamespace, true)
	line = append(line, `",pod_uid="`...)
	line = appendEscaped(line, o.PodUID, true)
	return append(line, '"')
}

// appendEscaped appends s as expfmt writes a label value (quoted) or a
// help text: backslash and newline escaped, and in a label value the
// double quote too. A label value is made valid UTF-8 first, as the
// families built as data make it.
func appendEscaped(line []byte, s string, quoted bool) []byte {
	if quoted {
		s = validUTF8(s)
	}
	if !strings.ContainsAny(s, "\\\n\"") {
		return append(line, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			line = append(line, `\\`...)
		case c == '\n':
			line = append(line, `\n`...)
		case c == '"' && quoted:
			line = append(line, `\"`...)
		default:
			line = append(line, c)
		}
	}
	return line
}

// appendFloat appends a sample value as expfmt writes it.
func appendFloat(line []byte, f float64) []byte {
	switch {
	case f == 1:
		return append(line, '1')
	case f == 0:
		return append(line, '0')
	case f == -1:
		return append(line, "-1"...)
	case math.IsNaN(f):
		return append(line, "NaN"...)
	case math.IsInf(f, +1):
		return append(line, "+Inf"...)
	case math.IsInf(f, -1):
		return append(line, "-Inf"...)
	}
	return strconv.AppendFloat(line, f, 'g', -1, 64)
}

// GatherText implements [TextGatherer]: the families of Gather, those of
// a TextGatherer as it gathers them for text.
func (gs Gatherers) GatherText() ([]TextFamily, error) {
	var all []TextFamily
	var errs prometheus.MultiError
	for _, g := range gs {
		if tg, ok := g.(TextGatherer); ok {
			fs, err := tg.GatherText()
			errs.Append(err)
			all = append(all, fs...)
			continue
		}
		mfs, err := g.Gather()
		errs.Append(err)
		for _, mf := range mfs {
			all = append(all, TextFamily{name: mf.GetName(), mf: mf})
		}
	}
	errs = append(errs, sortFamilies(all, TextFamily.Name)...)
	return all, errs.MaybeUnwrap()
}
