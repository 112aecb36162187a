package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/veth-exporter/veth_exporter/internal/netnstest"
)

// scriptName is the name the fake Docker Engine gives the container of
// vethowned: were the page to insert it as markup, it would run and log a
// console error, which the test watches for.
const scriptName = `<script>console.error("xss")</script>`

// fakeDockerEngine serves, on a unix socket, the Docker Engine API
// endpoints the resolver asks, with one running container: what a real
// dockerd cannot give, a container name holding markup.
func fakeDockerEngine(t *testing.T, id, name string, pid int, bridge string) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	version := regexp.MustCompile(`^/v[0-9.]+`)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := version.ReplaceAllString(r.URL.Path, "")
		switch p {
		case "/_ping":
			w.Header().Set("Api-Version", "1.41")
			w.Write([]byte("OK"))
		case "/containers/json":
			json.NewEncoder(w).Encode([]map[string]any{{
				"Id": id, "Names": []string{"/" + name}, "Image": "bb:local", "State": "running",
				"HostConfig": map[string]string{"NetworkMode": "bridge"},
			}})
		case "/containers/" + id + "/json":
			json.NewEncoder(w).Encode(map[string]any{"State": map[string]any{"Pid": pid}})
		case "/networks":
			json.NewEncoder(w).Encode([]map[string]any{{
				"Id": strings.Repeat("ab", 32), "Name": "bridge", "Driver": "bridge",
				"Options": map[string]string{"com.docker.network.bridge.name": bridge},
			}})
		case "/events":
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + socket
}

// chromium returns Debian's chromium, or skips (fails in CI) without it.
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("VETH_EXPORTER_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("chromium not installed (Debian package chromium)")
		}
		t.Skip("chromium not installed (Debian package chromium)")
	}
	return path
}

// browser starts a headless chromium in the test's namespaces (it reaches
// the exporter on the fixture's loopback, and nothing else) and returns a
// tab's context and the console errors and exceptions it has seen so far.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // root, as in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelTab(); cancelAlloc() })

	// Start the browser first: a message written before the subscription
	// would be lost, and a missing library fails here.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	var (
		mu       sync.Mutex
		messages []string
	)
	console := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range console {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleError, chromedp.ConsoleWarning, chromedp.ConsoleException:
				mu.Lock()
				messages = append(messages, fmt.Sprintf("%s %s:%d: %s", m.Type, m.URL, m.Line+1, m.Text))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancelTimeout(); <-done })
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(messages)
	}
}

// pageRow is one veth as the page shows it.
type pageRow struct {
	Device  string `json:"device"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Owner   string `json:"owner"`
	Clean   string `json:"clean"`
	Needs   string `json:"needs"`
}

// readRows reads the table of the loaded page.
const readRows = `Array.from(document.querySelectorAll("tr.veth")).map(r => {
	const sel = 'tr.evidence[data-device="' + CSS.escape(r.dataset.device) + '"] ';
	const ev = document.querySelector(sel + 'code.clean');
	const needs = document.querySelector(sel + 'code.clean-needs');
	return {
		device: r.querySelector(".device").textContent,
		verdict: r.querySelector(".verdict").textContent,
		reason: r.querySelector(".reason").textContent,
		owner: r.querySelector(".owner").textContent,
		clean: ev ? ev.textContent : "",
		needs: needs ? needs.textContent : "",
	};
})`

func devices(rows []pageRow) []string {
	var d []string
	for _, r := range rows {
		d = append(d, r.Device)
	}
	slices.Sort(d)
	return d
}

// TestVethsPageInBrowser loads /veths of the real binary, over the golden
// fixture with a Docker resolver, in a real headless chromium: every
// device with its verdict, the filters, the evidence and clean command of
// the orphans, a container name holding markup shown as text, no console
// error; /api/v1/veths says the same as the page and as inspect.
// With VETH_SCREENSHOT=FILE it saves a screenshot of the page (make
// screenshot).
func TestVethsPageInBrowser(t *testing.T) {
	netnstest.Require(t)
	goldenFixture(t)
	owned := ownerPID(t, goldenContainer)
	docker := fakeDockerEngine(t, goldenContainer, scriptName, owned, "docker0")
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "state.json")
	e := startExporter(t, "--state.path="+state, "--docker.host="+docker,
		"--remediation.mode=dry-run", "--remediation.bearer-token-file="+token)
	ctx, consoleErrors := browser(t)

	want := map[string]string{
		"vethowned": "owned", "vethpod": "owned", "cilium_host": "owned", "cilium_net": "owned",
		"vethleak": "orphaned", "hostA": "orphaned", "hostB": "orphaned",
		"vethstray": "unknown",
	}

	// From the landing page, as an operator finds it.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.url+"/"),
		chromedp.Click(chromedp.CSS(`a[href="/veths"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#veths`)),
	); err != nil {
		t.Fatalf("load /veths from the landing page: %v\n%s", err, e.log)
	}
	rows := evaluate[[]pageRow](ctx, t, readRows)
	scripts := evaluate[int](ctx, t, `document.scripts.length`)
	got := map[string]string{}
	for _, r := range rows {
		got[r.Device] = r.Verdict
	}
	if !maps.Equal(got, want) {
		t.Errorf("/veths shows the verdicts %v, want %v", got, want)
	}
	if scripts != 0 {
		t.Errorf("/veths has %d script elements, want none (no JavaScript; markup in names is text)", scripts)
	}
	for _, r := range rows {
		switch {
		case r.Device == "vethowned" && !strings.Contains(r.Owner, scriptName):
			t.Errorf("vethowned's owner shows as %q, want the container name %q as text", r.Owner, scriptName)
		// clean takes vethleak with its default gates, given the running
		// exporter's state file; a master-less pair on the host it refuses
		// by default, and the page names the flags that would take it.
		case r.Device == "vethleak" && r.Clean != "veth_exporter clean --state.path="+state+" vethleak":
			t.Errorf("orphan vethleak shows the clean command %q, want %q", r.Clean, "veth_exporter clean --state.path="+state+" vethleak")
		case r.Device != "vethleak" && r.Clean != "":
			t.Errorf("%s (%s, %s) shows the clean command %q, which clean refuses with these gates; want none", r.Device, r.Verdict, r.Reason, r.Clean)
		case r.Reason == "peer_on_host" && r.Needs != "--remediation.reasons=peer_on_host --remediation.master-include='docker0|br-[0-9a-f]{12}|cni0|cbr0|'":
			t.Errorf("%s (peer_on_host, no master) says it needs %q, want the reason and an empty master alternative", r.Device, r.Needs)
		}
	}
	if os.Getenv("VETH_SCREENSHOT") != "" {
		screenshot(ctx, t, os.Getenv("VETH_SCREENSHOT"))
	}

	// The form filters, without JavaScript: a GET with query parameters.
	loaded := chromedp.Events(ctx, page.LoadEventFired)
	if err := chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`#verdict`), "orphaned"),
		chromedp.SetValue(chromedp.CSS(`#master`), "cni0"),
		chromedp.Click(chromedp.CSS(`#apply`)),
	); err != nil {
		t.Fatalf("filter /veths: %v", err)
	}
	for _, err := range loaded {
		if err != nil {
			t.Fatalf("filter /veths: %v", err)
		}
		break
	}
	location := evaluate[string](ctx, t, `document.location.toString()`)
	rows = evaluate[[]pageRow](ctx, t, readRows)
	evidence := evaluate[string](ctx, t, `(document.querySelector('tr.evidence[data-device="vethleak"]') || {}).textContent || ""`)
	if !strings.HasSuffix(location, "/veths?verdict=orphaned&master=cni0") {
		t.Errorf("the filter form led to %s, want /veths?verdict=orphaned&master=cni0", location)
	}
	if d := devices(rows); !slices.Equal(d, []string{"vethleak"}) {
		t.Errorf("/veths?verdict=orphaned&master=cni0 shows %q, want [vethleak]", d)
	}
	for _, w := range []string{"/run/netns/cni-leak", "Orphaned since", "Last owner"} {
		if !strings.Contains(evidence, w) {
			t.Errorf("vethleak's evidence %q lacks %q", evidence, w)
		}
	}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"?verdict=orphaned", []string{"hostA", "hostB", "vethleak"}},
		{"?verdict=unknown", []string{"vethstray"}},
		{"?master=docker0", []string{"vethowned", "vethstray"}},
		{"?verdict=owned&master=cni0", []string{"vethpod"}},
		{"?master=-", []string{"cilium_host", "cilium_net", "hostA", "hostB"}},
	} {
		if err := chromedp.Do(ctx,
			chromedp.Navigate(e.url+"/veths"+tt.query),
			chromedp.WaitVisible(chromedp.CSS(`#veths`)),
		); err != nil {
			t.Fatalf("load /veths%s: %v", tt.query, err)
		}
		rows = evaluate[[]pageRow](ctx, t, readRows)
		if d := devices(rows); !slices.Equal(d, tt.want) {
			t.Errorf("/veths%s shows %q, want %q", tt.query, d, tt.want)
		}
	}
	if errs := consoleErrors(); len(errs) > 0 {
		t.Errorf("the browser logged errors:\n%s", strings.Join(errs, "\n"))
	}

	// The API says what the page says, and what inspect says.
	api := inventoryDoc(t, func() ([]byte, error) {
		resp, err := http.Get(e.url + "/api/v1/veths")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" {
			return nil, fmt.Errorf("%s, Content-Type %q", resp.Status, ct)
		}
		return io.ReadAll(resp.Body)
	})
	inspect := inventoryDoc(t, func() ([]byte, error) {
		return exec.Command(exporterBinary(t), "inspect", "--output=json", "--inventory.trust-pid-namespace",
			"--docker.host="+docker, "--state.path="+state).Output()
	})
	for name, doc := range map[string]map[string]apiVeth{"/api/v1/veths": api, "inspect --output=json": inspect} {
		got := map[string]string{}
		for d, v := range doc {
			got[d] = v.Verdict
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s gives the verdicts %v, want %v", name, got, want)
		}
		if o := doc["vethowned"].Owner; o == nil || o.Name != scriptName || o.ID != goldenContainer {
			t.Errorf("%s gives vethowned the owner %+v, want container %s named %q", name, o, goldenContainer, scriptName)
		}
	}
	for d, v := range api {
		if i := inspect[d]; i.Reason != v.Reason || i.Index != v.Index {
			t.Errorf("%s: /api/v1/veths says %+v, inspect %+v", d, v, i)
		}
	}
}

// apiVeth is what the tests read of a veth in the inventory document.
type apiVeth struct {
	Device  string `json:"device"`
	Index   int    `json:"ifindex"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Owner   *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"owner"`
}

// inventoryDoc reads an inventory document, by device.
func inventoryDoc(t *testing.T, read func() ([]byte, error)) map[string]apiVeth {
	t.Helper()
	b, err := read()
	if err != nil {
		t.Fatalf("read the inventory document: %v", err)
	}
	var doc struct {
		Veths []apiVeth `json:"veths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("inventory document: %v\n%s", err, b)
	}
	byDevice := map[string]apiVeth{}
	for _, v := range doc.Veths {
		byDevice[v.Device] = v
	}
	return byDevice
}

// ownerPID is the PID of the fixture's process in the cgroup of the
// container id: the process that holds the namespace of its veth.
func ownerPID(t *testing.T, id string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cgroup"); err == nil && strings.Contains(string(b), id) {
			return pid
		}
	}
	t.Fatalf("no process in the cgroup of container %s", id)
	return 0
}

// evaluate runs a JavaScript expression in the loaded page (from the test,
// not the page: it has none) and decodes its value.
func evaluate[T any](ctx context.Context, t *testing.T, expression string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expression, err)
	}
	return v
}

// screenshot saves the whole loaded page as a PNG.
func screenshot(ctx context.Context, t *testing.T, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of /veths saved to %s", path)
}

// TestVethsWebConfig: the inventory is as protected as /metrics by
// --web.config.file: no credential, no page and no document.
func TestVethsWebConfig(t *testing.T) {
	netnstest.Require(t)
	netnstest.NamedNetns(t, "webcfg")
	netnstest.Veth(t, "vwebcfg", "webcfg", "")
	config := filepath.Join(t.TempDir(), "web.yml")
	writeSecret(t, config, basicAuthUsers(t, "prom", "am"), 0o600)
	prom := withBasicAuth("prom", "prom-pw")
	e := startAuthExporter(t, http.DefaultClient, "http", prom, "--web.config.file="+config, "--remediation.users=am")
	for _, path := range []string{"/metrics", "/veths", "/api/v1/veths"} {
		if code, _ := request(t, http.DefaultClient, "GET", e.url+path, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials = %d, want 401", path, code)
		}
		if code, _ := request(t, http.DefaultClient, "GET", e.url+path, nil, withBasicAuth("prom", "wrong")); code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong password = %d, want 401", path, code)
		}
		if code, body := request(t, http.DefaultClient, "GET", e.url+path, nil, prom); code != http.StatusOK || !strings.Contains(body, "vwebcfg") {
			t.Errorf("GET %s as prom = %d, want 200 naming vwebcfg\n%s", path, code, body)
		}
	}
}

// TestInspectJSONNoVeths: on a node without veths the document lists
// "veths": [], not null, as /api/v1/veths does.
func TestInspectJSONNoVeths(t *testing.T) {
	netnstest.Require(t)
	// A network namespace of its own, inside the test's private one: no
	// veth of another test can show.
	out, err := exec.Command("unshare", "--net", "--", exporterBinary(t), "inspect", "--output=json",
		"--inventory.trust-pid-namespace", "--state.path="+filepath.Join(t.TempDir(), "state.json")).Output()
	if err != nil {
		t.Fatalf("inspect --output=json: %v\n%s", err, out)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("inspect --output=json: %v\n%s", err, out)
	}
	if got := string(doc["veths"]); got != "[]" {
		t.Errorf("inspect --output=json on a node without veths gives \"veths\": %s, want []\n%s", got, out)
	}
}
