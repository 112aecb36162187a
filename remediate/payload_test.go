package remediate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// alertmanager025Payload is a notification as Alertmanager 0.25 sends it:
// its field order, Go's HTML escaping of '&' in generatorURL, the zero
// endsAt of a firing alert, and a resolved alert in a firing group.
const alertmanager025Payload = `{"receiver":"veth-remediation","status":"firing","alerts":[` +
	`{"status":"firing","labels":{"alertname":"VethOrphaned","device":"veth1a2b3c4","ifindex":"17","instance":"node-1:9101","job":"veth","severity":"warning"},` +
	`"annotations":{"description":"veth1a2b3c4 on node-1:9101 has been orphaned for 15m.","runbook_url":"https://example.com/veth_exporter#remediation","summary":"Leftover veth"},` +
	`"startsAt":"2023-02-01T10:00:00.123456789Z","endsAt":"0001-01-01T00:00:00Z",` +
	`"generatorURL":"http://prometheus:9090/graph?g0.expr=veth_orphaned+%3D%3D+1\u0026g0.tab=1","fingerprint":"5c1f5ab3bd0a1b2c"},` +
	`{"status":"resolved","labels":{"alertname":"VethOrphaned","device":"veth9f8e7d6","ifindex":"23","instance":"node-1:9101","job":"veth","severity":"warning"},` +
	`"annotations":{"summary":"Leftover veth"},` +
	`"startsAt":"2023-02-01T09:00:00Z","endsAt":"2023-02-01T09:40:00.5+01:00",` +
	`"generatorURL":"http://prometheus:9090/graph?g0.expr=veth_orphaned+%3D%3D+1\u0026g0.tab=1","fingerprint":"0d4c3b2a19f8e7d6"}],` +
	`"groupLabels":{"alertname":"VethOrphaned","instance":"node-1:9101"},` +
	`"commonLabels":{"alertname":"VethOrphaned","instance":"node-1:9101","job":"veth","severity":"warning"},` +
	`"commonAnnotations":{"summary":"Leftover veth"},` +
	`"externalURL":"http://alertmanager:9093","version":"4",` +
	`"groupKey":"{}/{severity=\"warning\"}:{alertname=\"VethOrphaned\", instance=\"node-1:9101\"}","truncatedAlerts":0}` + "\n"

// v4 is a version 4 body around the JSON array alerts.
func v4(alerts string) string {
	return `{"version":"4","status":"firing","receiver":"r","groupKey":"{}:{}","alerts":` + alerts + `}`
}

// manyAlerts is a version 4 body with n firing alerts on devices veth0….
func manyAlerts(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"status":"firing","labels":{"device":"veth%d","ifindex":"%d"},"startsAt":"2024-05-06T07:08:09Z","fingerprint":"%016x"}`, i, i+2, i)
	}
	return v4("[" + b.String() + "]")
}

func TestDecodePayload(t *testing.T) {
	const limit = 1 << 20
	for _, tt := range []struct {
		name    string
		body    string
		limit   int64 // limit when not 0
		wantErr error
		wantMsg string                     // a part of the error, when wantErr is set
		check   func(*testing.T, *Payload) // further checks on success
	}{
		{
			name: "alertmanager 0.25",
			body: alertmanager025Payload,
			check: func(t *testing.T, p *Payload) {
				if p.Receiver != "veth-remediation" || p.Status != StatusFiring || p.ExternalURL != "http://alertmanager:9093" ||
					p.GroupKey != `{}/{severity="warning"}:{alertname="VethOrphaned", instance="node-1:9101"}` || p.TruncatedAlerts != 0 {
					t.Errorf("header = %+v", p)
				}
				if p.GroupLabels["instance"] != "node-1:9101" || p.CommonLabels["job"] != "veth" || p.CommonAnnotations["summary"] != "Leftover veth" {
					t.Errorf("group labels/annotations = %v %v %v", p.GroupLabels, p.CommonLabels, p.CommonAnnotations)
				}
				if len(p.Alerts) != 2 {
					t.Fatalf("got %d alerts, want 2", len(p.Alerts))
				}
				a := p.Alerts[0]
				if a.Status != StatusFiring || !a.Firing() || a.Labels["device"] != "veth1a2b3c4" || a.Labels["ifindex"] != "17" ||
					a.Annotations["summary"] != "Leftover veth" || a.Fingerprint != "5c1f5ab3bd0a1b2c" ||
					a.GeneratorURL != "http://prometheus:9090/graph?g0.expr=veth_orphaned+%3D%3D+1&g0.tab=1" {
					t.Errorf("alerts[0] = %+v", a)
				}
				if want := time.Date(2023, 2, 1, 10, 0, 0, 123456789, time.UTC); !a.StartsAt.Equal(want) {
					t.Errorf("alerts[0].StartsAt = %v, want %v", a.StartsAt, want)
				}
				if !a.EndsAt.IsZero() {
					t.Errorf("alerts[0].EndsAt = %v, want the zero time", a.EndsAt)
				}
				r := p.Alerts[1]
				if r.Status != StatusResolved || r.Firing() || r.Labels["device"] != "veth9f8e7d6" {
					t.Errorf("alerts[1] = %+v, want the resolved alert for veth9f8e7d6", r)
				}
				if want := time.Date(2023, 2, 1, 8, 40, 0, 5e8, time.UTC); !r.EndsAt.Equal(want) {
					t.Errorf("alerts[1].EndsAt = %v, want %v", r.EndsAt, want)
				}
			},
		},
		{
			name: "unknown fields of newer alertmanagers",
			body: `{"version":"4","status":"firing","notification_reason":"new_alert","routeLabels":{"team":"net"},` +
				`"alerts":[{"status":"firing","labels":{"device":"veth0"},"startsAt":"2024-01-01T00:00:00Z","silencedBy":[],"x":{"y":[1,{"z":null}]}}],` +
				`"future":{"nested":[true,false,null,1.5e3]}}`,
			check: func(t *testing.T, p *Payload) {
				if len(p.Alerts) != 1 || p.Alerts[0].Labels["device"] != "veth0" || !p.Alerts[0].Firing() {
					t.Errorf("alerts = %+v, want the one firing alert for veth0", p.Alerts)
				}
			},
		},
		{
			name: "every alert keeps its own status",
			body: v4(`[{"status":"resolved","labels":{"device":"a"}},{"status":"firing","labels":{"device":"b"}},{"status":"resolved","labels":{"device":"c"}},{"labels":{"device":"d"}}]`),
			check: func(t *testing.T, p *Payload) {
				var got []string
				for _, a := range p.Alerts {
					got = append(got, a.Labels["device"]+"="+a.Status)
				}
				if want := "a=resolved b=firing c=resolved d="; strings.Join(got, " ") != want {
					t.Errorf("statuses = %q, want %q", strings.Join(got, " "), want)
				}
			},
		},
		{
			// Per-alert problems are for the gates: the body decodes.
			name: "alerts the gates will refuse",
			body: v4(`[{"status":"firing"},{"status":"bogus","labels":{"device":"../x"}},{"status":"firing","labels":null,"startsAt":null},{}]`),
			check: func(t *testing.T, p *Payload) {
				if len(p.Alerts) != 4 {
					t.Fatalf("got %d alerts, want 4", len(p.Alerts))
				}
				if a := p.Alerts[2]; a.Labels != nil || !a.StartsAt.IsZero() {
					t.Errorf("alerts[2] = %+v, want no labels and a zero startsAt", a)
				}
				if p.Alerts[1].Firing() || p.Alerts[3].Firing() {
					t.Errorf("alerts[1] and alerts[3] fire, want them not firing")
				}
			},
		},
		{
			name: "empty alerts",
			body: v4(`[]`),
			check: func(t *testing.T, p *Payload) {
				if p.Alerts == nil || len(p.Alerts) != 0 {
					t.Errorf("Alerts = %#v, want an empty, non-nil slice", p.Alerts)
				}
			},
		},
		{
			name: "1000 alerts",
			body: manyAlerts(1000),
			check: func(t *testing.T, p *Payload) {
				if len(p.Alerts) != 1000 {
					t.Fatalf("got %d alerts, want 1000", len(p.Alerts))
				}
				for i, a := range p.Alerts {
					if a.Labels["device"] != fmt.Sprintf("veth%d", i) || !a.Firing() {
						t.Fatalf("alerts[%d] = %+v", i, a)
					}
				}
			},
		},
		{
			name: "whitespace around the object",
			body: " \t\r\n" + v4(`[]`) + "\n\n \t",
			check: func(t *testing.T, p *Payload) {
				if p.Version != PayloadVersion {
					t.Errorf("Version = %q, want %q", p.Version, PayloadVersion)
				}
			},
		},
		{
			name: "a field name in another case",
			body: `{"VERSION":"4","Alerts":[{"Status":"firing"}]}`,
			check: func(t *testing.T, p *Payload) {
				if len(p.Alerts) != 1 || !p.Alerts[0].Firing() {
					t.Errorf("Alerts = %+v, want one firing alert", p.Alerts)
				}
			},
		},
		{
			name: "labels differing only in case are two labels",
			body: v4(`[{"labels":{"device":"a","Device":"b"}}]`),
			check: func(t *testing.T, p *Payload) {
				if l := p.Alerts[0].Labels; l["device"] != "a" || l["Device"] != "b" {
					t.Errorf("Labels = %v", l)
				}
			},
		},

		{name: "version 3", body: `{"version":"3","alerts":[]}`, wantErr: ErrUnsupportedVersion, wantMsg: `version "3", want "4"`},
		{name: "version 5", body: `{"version":"5","alerts":[]}`, wantErr: ErrUnsupportedVersion, wantMsg: `"5"`},
		{name: "no version", body: `{"alerts":[]}`, wantErr: ErrUnsupportedVersion, wantMsg: "no version"},
		{name: "numeric version", body: `{"version":4,"alerts":[]}`, wantErr: ErrMalformedPayload, wantMsg: "version: a JSON number where a string was expected"},
		{name: "empty body", body: "", wantErr: ErrMalformedPayload, wantMsg: "empty body"},
		{name: "whitespace body", body: " \n\t", wantErr: ErrMalformedPayload, wantMsg: "empty body"},
		{name: "null body", body: "null", wantErr: ErrMalformedPayload, wantMsg: "not a JSON object"},
		{name: "array body", body: "[" + v4("[]") + "]", wantErr: ErrMalformedPayload, wantMsg: "not a JSON object"},
		{name: "string body", body: `"version"`, wantErr: ErrMalformedPayload, wantMsg: "not a JSON object"},
		{name: "invalid JSON", body: `{"version":"4",alerts:[]}`, wantErr: ErrMalformedPayload, wantMsg: "invalid JSON at byte 16"},
		{name: "single quotes", body: `{'version':'4'}`, wantErr: ErrMalformedPayload, wantMsg: "invalid JSON"},
		{name: "trailing comma", body: `{"version":"4","alerts":[],}`, wantErr: ErrMalformedPayload, wantMsg: "invalid JSON"},
		{name: "cut short", body: v4(`[{"status":"firing"`), wantErr: ErrMalformedPayload, wantMsg: "cut short"},
		{name: "byte order mark", body: "\ufeff" + v4(`[]`), wantErr: ErrMalformedPayload, wantMsg: "not a JSON object"},
		{name: "invalid UTF-8", body: v4(`[{"labels":{"device":"veth` + "\xff" + `"}}]`), wantErr: ErrMalformedPayload, wantMsg: "not valid UTF-8"},
		{name: "trailing garbage", body: v4(`[]`) + "garbage", wantErr: ErrMalformedPayload, wantMsg: "unexpected data after the JSON object at byte"},
		{name: "trailing NUL", body: v4(`[]`) + "\x00", wantErr: ErrMalformedPayload, wantMsg: "unexpected data"},
		{name: "two objects", body: v4(`[]`) + v4(`[]`), wantErr: ErrMalformedPayload, wantMsg: "unexpected data"},
		{name: "two objects on two lines", body: v4(`[]`) + "\n" + v4(`[]`) + "\n", wantErr: ErrMalformedPayload, wantMsg: "unexpected data"},
		{name: "alerts missing", body: `{"version":"4","status":"firing"}`, wantErr: ErrMalformedPayload, wantMsg: "no alerts array"},
		{name: "alerts null", body: v4(`null`), wantErr: ErrMalformedPayload, wantMsg: "no alerts array"},
		{name: "alerts an object", body: v4(`{"status":"firing"}`), wantErr: ErrMalformedPayload, wantMsg: "alerts: a JSON object where an array was expected"},
		{name: "alerts a string", body: v4(`"[]"`), wantErr: ErrMalformedPayload, wantMsg: "alerts: a JSON string where an array was expected"},
		{name: "a null alert", body: v4(`[{"status":"firing"},null]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[1] is null"},
		{name: "an alert that is a string", body: v4(`["firing"]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[0]: a JSON string where an object was expected"},
		{name: "a numeric label", body: v4(`[{},{"labels":{"device":5}}]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[1].labels: a JSON number where a string was expected"},
		{name: "a numeric status", body: v4(`[{"status":1}]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[0].status: a JSON number"},
		{name: "startsAt not a time", body: v4(`[{"startsAt":"15 minutes ago"}]`), wantErr: ErrMalformedPayload, wantMsg: `alerts[0].startsAt: "15 minutes ago" is not an RFC 3339 time`},
		{name: "startsAt a number", body: v4(`[{"startsAt":1700000000}]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[0].startsAt: a JSON number where an RFC 3339 time was expected"},
		{name: "startsAt without a zone", body: v4(`[{"startsAt":"2024-01-01T00:00:00"}]`), wantErr: ErrMalformedPayload, wantMsg: "alerts[0].startsAt"},
		{name: "endsAt not a time", body: v4(`[{},{},{"endsAt":"never"}]`), wantErr: ErrMalformedPayload, wantMsg: `alerts[2].endsAt: "never"`},
		{name: "negative truncatedAlerts", body: `{"version":"4","truncatedAlerts":-1,"alerts":[]}`, wantErr: ErrMalformedPayload, wantMsg: "truncatedAlerts: a JSON number -1 where a non-negative integer was expected"},
		{name: "commonLabels an array", body: `{"version":"4","commonLabels":[],"alerts":[]}`, wantErr: ErrMalformedPayload, wantMsg: "commonLabels: a JSON array where an object was expected"},
		{name: "repeated top-level key", body: `{"version":"4","alerts":[],"alerts":[{"status":"firing"}]}`, wantErr: ErrMalformedPayload, wantMsg: `key "alerts" appears twice`},
		{name: "repeated key in another case", body: `{"version":"4","alerts":[],"ALERTS":[]}`, wantErr: ErrMalformedPayload, wantMsg: `key "ALERTS" appears twice`},
		{name: "repeated version", body: `{"version":"3","version":"4","alerts":[]}`, wantErr: ErrMalformedPayload, wantMsg: `key "version" appears twice`},
		{name: "repeated status in an alert", body: v4(`[{"status":"resolved","status":"firing"}]`), wantErr: ErrMalformedPayload, wantMsg: `key "status" appears twice`},
		{name: "repeated status by Unicode folding", body: v4(`[{"status":"resolved","ſtatus":"firing"}]`), wantErr: ErrMalformedPayload, wantMsg: `key "ſtatus" appears twice`},
		{name: "repeated label", body: v4(`[{"labels":{"device":"veth0","device":"eth0"}}]`), wantErr: ErrMalformedPayload, wantMsg: `key "device" appears twice`},
		{name: "repeated key in an unknown field", body: `{"version":"4","alerts":[],"x":{"a":1,"a":1}}`, wantErr: ErrMalformedPayload, wantMsg: `key "a" appears twice`},
		{name: "deeply nested unknown field", body: `{"version":"4","alerts":[],"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, wantErr: ErrMalformedPayload, wantMsg: "exceeded max depth"},
		{name: "one byte over the limit", body: v4(`[]`), limit: int64(len(v4(`[]`))) - 1, wantErr: ErrTooLarge},
		{name: "exactly the limit", body: v4(`[]`), limit: int64(len(v4(`[]`))), check: func(*testing.T, *Payload) {}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.limit
			if l == 0 {
				l = limit
			}
			p, err := DecodePayload(strings.NewReader(tt.body), l)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.wantMsg) {
					t.Fatalf("DecodePayload(%s) = %v, want %v containing %q", tt.name, err, tt.wantErr, tt.wantMsg)
				}
				if p != nil {
					t.Errorf("DecodePayload(%s) returned a payload with its error", tt.name)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePayload(%s) = %v, want no error", tt.name, err)
			}
			if p.Version != PayloadVersion || p.Alerts == nil {
				t.Fatalf("DecodePayload(%s) = version %q, alerts %v; want version 4 and a non-nil slice", tt.name, p.Version, p.Alerts)
			}
			tt.check(t, p)
		})
	}
}

// countingReader serves n bytes of '{' then EOF, counting what it served.
type countingReader struct {
	left, served int64
}

func (r *countingReader) Read(b []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), r.left)
	for i := range n {
		b[i] = '{'
	}
	r.left -= n
	r.served += n
	return int(n), nil
}

// TestDecodePayloadStopsReadingAtTheLimit checks that an oversized body is
// refused without being read: a 10 MiB body against a 1 MiB limit.
func TestDecodePayloadStopsReadingAtTheLimit(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		name        string
		size, limit int64
	}{
		{"10 MiB over 1 MiB", 10 * mib, mib},
		{"1 MiB and a byte over 1 MiB", mib + 1, mib},
		{"2 bytes over 1 byte", 2, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &countingReader{left: tt.size}
			_, err := DecodePayload(r, tt.limit)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodePayload(%d bytes, limit %d) = %v, want ErrTooLarge", tt.size, tt.limit, err)
			}
			if errors.Is(err, ErrMalformedPayload) {
				t.Errorf("DecodePayload(%d bytes, limit %d) = %v, which is also ErrMalformedPayload", tt.size, tt.limit, err)
			}
			if r.served > tt.limit+1 {
				t.Errorf("DecodePayload read %d bytes with a limit of %d, want at most %d", r.served, tt.limit, tt.limit+1)
			}
		})
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestDecodePayloadReaderErrors(t *testing.T) {
	broken := errors.New("connection reset")
	bigBody := strings.NewReader(v4(`[]`) + strings.Repeat(" ", 100))
	for _, tt := range []struct {
		name    string
		r       io.Reader
		limit   int64
		wantErr error
	}{
		{
			// The handler may wrap the body in an http.MaxBytesReader of its own.
			name:    "http.MaxBytesReader below the limit",
			r:       http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(bigBody), 10),
			limit:   1 << 20,
			wantErr: ErrTooLarge,
		},
		{name: "a read error", r: failingReader{broken}, limit: 1 << 20, wantErr: broken},
		{name: "a read error after some data", r: io.MultiReader(strings.NewReader(`{"vers`), failingReader{broken}), limit: 1 << 20, wantErr: broken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := DecodePayload(tt.r, tt.limit)
			if !errors.Is(err, tt.wantErr) || p != nil {
				t.Fatalf("DecodePayload(%s) = %v, %v, want nil, %v", tt.name, p, err, tt.wantErr)
			}
			if tt.wantErr == broken && (errors.Is(err, ErrTooLarge) || errors.Is(err, ErrMalformedPayload)) {
				t.Errorf("DecodePayload(%s) = %v: a read error is neither too large nor malformed", tt.name, err)
			}
		})
	}
}

func TestDecodePayloadRefusesABadLimit(t *testing.T) {
	for _, limit := range []int64{0, -1} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			if p, err := DecodePayload(strings.NewReader(v4(`[]`)), limit); err == nil {
				t.Errorf("DecodePayload(limit %d) = %+v, nil, want an error", limit, p)
			}
		})
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		alertmanager025Payload, v4(`[]`), manyAlerts(3), `{"version":"3","alerts":[]}`, `{}`, ``, `null`,
		v4(`[]`) + v4(`[]`), v4(`[null]`), v4(`[{"startsAt":"yesterday"}]`),
		v4(`[{"labels":{"device":"a","device":"b"}}]`), `{"version":"4","alerts":[],"ALERTS":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const limit = 1 << 20
		p, err := DecodePayload(bytes.NewReader(body), limit)
		if err != nil {
			if p != nil {
				t.Fatalf("DecodePayload returned a payload with its error %v", err)
			}
			kinds := 0
			for _, e := range []error{ErrTooLarge, ErrMalformedPayload, ErrUnsupportedVersion} {
				if errors.Is(err, e) {
					kinds++
				}
			}
			if kinds != 1 {
				t.Fatalf("DecodePayload error %v is %d of the three kinds, want exactly one", err, kinds)
			}
		} else {
			if p.Version != PayloadVersion {
				t.Fatalf("DecodePayload accepted version %q", p.Version)
			}
			if p.Alerts == nil {
				t.Fatalf("DecodePayload accepted a body without alerts")
			}
			if !json.Valid(body) || !utf8.Valid(body) {
				t.Fatalf("DecodePayload accepted a body that is not valid JSON in UTF-8")
			}
			// What was accepted must survive a round trip unchanged.
			once, err := json.Marshal(p)
			if err != nil {
				t.Fatalf("re-encoding an accepted payload: %v", err)
			}
			p2, err := DecodePayload(bytes.NewReader(once), int64(len(once)))
			if err != nil {
				t.Fatalf("decoding a re-encoded payload %s: %v", once, err)
			}
			twice, _ := json.Marshal(p2)
			if !bytes.Equal(once, twice) {
				t.Fatalf("round trip changed the payload:\n%s\n%s", once, twice)
			}
		}

		// The limit is exact: len(body) bytes fit in len(body), not in one less.
		if len(body) > 0 {
			if _, err := DecodePayload(bytes.NewReader(body), int64(len(body))); errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodePayload(%d bytes, limit %d) = %v", len(body), len(body), err)
			}
		}
		if len(body) > 1 {
			if _, err := DecodePayload(bytes.NewReader(body), int64(len(body)-1)); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("DecodePayload(%d bytes, limit %d) = %v, want ErrTooLarge", len(body), len(body)-1, err)
			}
		}
	})
}
