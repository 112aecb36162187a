// The input side of the webhook: [DecodePayload] turns a request body into
// a [Payload] or a clear error, and decides nothing about any alert.

package remediate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// PayloadVersion is the only Alertmanager webhook payload version
// [DecodePayload] accepts.
const PayloadVersion = "4"

// Alert statuses as Alertmanager writes them, in [Alert.Status] and
// [Payload.Status].
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Errors of [DecodePayload], for errors.Is. The handler answers 413 to
// [ErrTooLarge] and 400 with the error's text to the other two.
var (
	ErrTooLarge           = errors.New("webhook payload too large")
	ErrMalformedPayload   = errors.New("malformed webhook payload")
	ErrUnsupportedVersion = errors.New("unsupported webhook payload version")
)

// Payload is an Alertmanager webhook notification, payload version "4".
// Fields Alertmanager added later (notification_reason, routeLabels, …)
// are accepted and dropped.
type Payload struct {
	Version  string `json:"version"`
	GroupKey string `json:"groupKey"`
	// TruncatedAlerts is how many alerts the receiver's max_alerts left
	// out of this notification.
	TruncatedAlerts uint64 `json:"truncatedAlerts"`
	// Status is "firing" when at least one of Alerts fires. Act on each
	// [Alert.Status] instead: a firing group can carry resolved alerts.
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	// Alerts is never nil in a decoded payload; it may be empty.
	Alerts []Alert `json:"alerts"`
}

// Alert is one alert of a [Payload], with its own status.
type Alert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	// StartsAt is zero when the body had none (or null).
	StartsAt time.Time `json:"startsAt"`
	// EndsAt is zero for a firing alert: Alertmanager writes
	// "0001-01-01T00:00:00Z".
	EndsAt       time.Time `json:"endsAt"`
	GeneratorURL string    `json:"generatorURL"`
	Fingerprint  string    `json:"fingerprint"`
}

// Firing reports whether the alert itself fires, whatever the status of
// the notification that carried it.
func (a Alert) Firing() bool { return a.Status == StatusFiring }

// DecodePayload reads one Alertmanager webhook payload from r, at most
// limit bytes of it, and decodes it.
//
// It rejects only what makes the whole body unusable, so that one error
// answers the whole request: a body over limit ([ErrTooLarge]); a body
// that is not exactly one JSON object in UTF-8, optionally followed by
// whitespace; a field of the wrong JSON type or a time that is not RFC
// 3339; a key repeated in one object (encoding/json would silently keep
// the last one, and matches field names regardless of case, so "status"
// and "Status" count as the same key); no "alerts" array, or an alert that
// is not an object ([ErrMalformedPayload]); a version other than
// [PayloadVersion] ([ErrUnsupportedVersion]).
//
// What makes one alert unusable is not an error here: a status other than
// firing, a missing or zero startsAt, a missing or invalid device label.
// The gates refuse those one alert at a time, each with its reason, and
// the other alerts of the notification are still considered.
//
// Errors from r other than exceeding the limit are returned wrapped as
// they are. If r is an [http.MaxBytesReader] that hits its own limit, the
// error is [ErrTooLarge] as well.
func DecodePayload(r io.Reader, limit int64) (*Payload, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("webhook payload limit must be positive, got %d", limit)
	}
	// One byte more than allowed tells "exactly at the limit" from "over".
	read := limit
	if read < math.MaxInt64 {
		read++
	}
	body, err := io.ReadAll(io.LimitReader(r, read))
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, mbe.Limit)
		}
		return nil, fmt.Errorf("reading webhook payload: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, limit)
	}

	malformed := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformedPayload, fmt.Sprintf(format, args...))
	}
	start := len(body) - len(bytes.TrimLeft(body, jsonSpace))
	switch {
	case start == len(body):
		return nil, malformed("empty body")
	case body[start] != '{':
		return nil, malformed("the body is not a JSON object")
	case !utf8.Valid(body):
		return nil, malformed("the body is not valid UTF-8")
	}

	// The alerts are decoded one by one below, so that an error can say
	// which alert it is about.
	var p Payload
	wire := struct {
		*Payload
		Alerts []json.RawMessage `json:"alerts"`
	}{Payload: &p}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&wire); err != nil {
		return nil, malformed("%s", describeJSONError("", err))
	}
	end := dec.InputOffset()
	if len(bytes.TrimLeft(body[end:], jsonSpace)) != 0 {
		return nil, malformed("unexpected data after the JSON object at byte %d", end)
	}
	if p.Version != PayloadVersion {
		if p.Version == "" {
			return nil, fmt.Errorf("%w: the body has no version, want %q", ErrUnsupportedVersion, PayloadVersion)
		}
		return nil, fmt.Errorf("%w %s, want %q", ErrUnsupportedVersion, quoteTruncated(p.Version), PayloadVersion)
	}
	if err := checkRepeatedKeys(body); err != nil {
		return nil, malformed("%s", err)
	}
	if wire.Alerts == nil {
		// Missing or null: Alertmanager always sends an array.
		return nil, malformed("the body has no alerts array")
	}
	p.Alerts = make([]Alert, len(wire.Alerts))
	for i, raw := range wire.Alerts {
		if err := decodeAlert(i, raw, &p.Alerts[i]); err != nil {
			return nil, malformed("%s", err)
		}
	}
	return &p, nil
}

// decodeAlert decodes element i of the alerts array into a.
func decodeAlert(i int, raw json.RawMessage, a *Alert) error {
	if string(raw) == "null" {
		return fmt.Errorf("alerts[%d] is null, want an object", i)
	}
	// Times are decoded apart, so that an error can name the field.
	wire := struct {
		*Alert
		StartsAt json.RawMessage `json:"startsAt"`
		EndsAt   json.RawMessage `json:"endsAt"`
	}{Alert: a}
	path := fmt.Sprintf("alerts[%d]", i)
	if err := json.Unmarshal(raw, &wire); err != nil {
		return errors.New(describeJSONError(path, err))
	}
	for _, t := range []struct {
		field string
		raw   json.RawMessage
		dst   *time.Time
	}{{"startsAt", wire.StartsAt, &a.StartsAt}, {"endsAt", wire.EndsAt, &a.EndsAt}} {
		// Absent and null leave the zero time, for the gates to refuse.
		if t.raw == nil {
			continue
		}
		if err := json.Unmarshal(t.raw, t.dst); err != nil {
			var text string
			if json.Unmarshal(t.raw, &text) != nil {
				return fmt.Errorf("%s.%s: a JSON %s where an RFC 3339 time was expected", path, t.field, jsonTypeOf(t.raw))
			}
			return fmt.Errorf("%s.%s: %s is not an RFC 3339 time", path, t.field, quoteTruncated(text))
		}
	}
	return nil
}

// jsonSpace is the whitespace JSON allows between tokens (RFC 8259).
const jsonSpace = " \t\r\n"

// describeJSONError turns an encoding/json error into a message that says
// where the body went wrong. path names the value that was decoded
// ("alerts[3]"), empty for the whole body.
func describeJSONError(path string, err error) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, syntax)
	case errors.As(err, &typ):
		// Field is the path to the value, through the Go names of the
		// embedded structs of the wire types; a map value is named by its
		// map ("labels"), not by its key.
		field := strings.TrimPrefix(strings.TrimPrefix(typ.Field, "Payload."), "Alert.")
		switch {
		case path == "" && field == "":
			field = "the body"
		case field == "":
			field = path
		case path != "":
			field = path + "." + field
		}
		return fmt.Sprintf("%s: a JSON %s where %s was expected", field, typ.Value, jsonKindName(typ.Type))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "the JSON object is cut short"
	default:
		return err.Error()
	}
}

// jsonKindName names the JSON a Go type decodes from.
func jsonKindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	default:
		return t.String()
	}
}

// jsonTypeOf names the JSON type of a valid JSON value.
func jsonTypeOf(raw json.RawMessage) string {
	switch raw[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// The field names of [Payload] and [Alert], which encoding/json matches
// without regard to case.
var (
	payloadFieldNames = []string{"version", "groupKey", "truncatedAlerts", "status", "receiver",
		"groupLabels", "commonLabels", "commonAnnotations", "externalURL", "alerts"}
	alertFieldNames = []string{"status", "labels", "annotations", "startsAt", "endsAt",
		"generatorURL", "fingerprint"}
)

// keyFrame is one JSON object or array open during [checkRepeatedKeys].
type keyFrame struct {
	object  bool
	fields  []string // an object: the struct fields its keys select; nil for maps and unknown fields
	alerts  bool     // an array: the alerts, whose elements are alerts
	wantKey bool     // an object: the next token is a key, or the object's end
	key     string   // an object: the key (folded onto its field) whose value comes next
	keys    map[string]bool
}

// checkRepeatedKeys refuses a body in which one object has the same key
// twice, as encoding/json sees keys: labels and annotations exactly, the
// fields of [Payload] and [Alert] without regard to case. encoding/json
// would keep the last value silently, and the body would say two things.
// It runs on a body that decoded without error, so its nesting is bounded.
func checkRepeatedKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []*keyFrame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		n := len(stack)
		var top *keyFrame
		if n > 0 {
			top = stack[n-1]
		}
		if top != nil && top.object && top.wantKey && tok != json.Delim('}') {
			raw, _ := tok.(string)
			key := foldedField(top.fields, raw)
			if top.keys[key] {
				return fmt.Errorf("key %s appears twice in one object (again at byte %d)", quoteTruncated(raw), dec.InputOffset())
			}
			if top.keys == nil {
				top.keys = make(map[string]bool)
			}
			top.keys[key] = true
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			f := &keyFrame{object: true, wantKey: true}
			switch {
			case top == nil:
				f.fields = payloadFieldNames
			case top.alerts:
				f.fields = alertFieldNames
			}
			stack = append(stack, f)
			continue
		case json.Delim('['):
			stack = append(stack, &keyFrame{alerts: n == 1 && top.key == "alerts"})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:n-1]
		}
		// A value has ended: its object wants a key next.
		if len(stack) > 0 {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// foldedField returns the field of fields that key selects, matched as
// encoding/json matches them, or key itself when it selects none.
func foldedField(fields []string, key string) string {
	for _, f := range fields {
		if strings.EqualFold(f, key) {
			return f
		}
	}
	return key
}
