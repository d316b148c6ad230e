package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fabricMetrics are the metric names the deploy files may query: what the
// gateway's /metrics serves (internal/app/metrics.go) or is about to, plus
// the process and Go collectors'. A dashboard or adapter rule naming
// anything else shows an empty panel; add a metric here only with the code
// that exports it.
var fabricMetrics = []string{
	"fabric_build_info",
	"fabric_channels",
	"fabric_connections",
	"fabric_connections_closed_total",
	"fabric_connections_refused_total",
	"fabric_draining",
	"fabric_fanout_latency_seconds", // histogram
	"fabric_joins_total",
	"fabric_messages_delivered_total",
	"fabric_messages_dropped_total",
	"fabric_messages_received_total",
	"fabric_messages_replayed_total",
	"fabric_nats_connected",
	"fabric_nats_subscriptions",
	"fabric_publish_requests_total",
	"fabric_resumes_total",
	"go_goroutines",
	"process_resident_memory_bytes",
}

var histogramMetrics = []string{"fabric_fanout_latency_seconds"}

// knownMetric accepts a listed name, or a histogram's series.
func knownMetric(name string) bool {
	if slices.Contains(fabricMetrics, name) {
		return true
	}
	for _, h := range histogramMetrics {
		if name == h+"_bucket" || name == h+"_sum" || name == h+"_count" {
			return true
		}
	}
	return false
}

// promqlWords are identifiers in PromQL that are not metric names.
var promqlWords = map[string]bool{
	// aggregations and their modifiers
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

var (
	reString    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reMatchers  = regexp.MustCompile(`\{[^{}]*\}`)
	reRange     = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reIdent     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	reVariable  = regexp.MustCompile(`\$\{?[a-zA-Z_][a-zA-Z0-9_]*(?::[a-z]+)?\}?`)
	reDuration  = regexp.MustCompile(`\b\d+(?:ms|s|m|h|d|w|y)\b`)
	reFuncAfter = regexp.MustCompile(`^\s*\(`)

	reLabelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
)

// metricNames extracts the metric names a PromQL expression selects: it
// drops strings, label matchers, ranges, grouping clauses and Grafana
// variables, then keeps the identifiers that are neither functions (an
// identifier followed by "(") nor keywords.
func metricNames(expr string) []string {
	e := reString.ReplaceAllString(expr, `""`)
	e = reVariable.ReplaceAllString(e, " ")
	for {
		n := reMatchers.ReplaceAllString(e, " ")
		n = reRange.ReplaceAllString(n, " ")
		if n == e {
			break
		}
		e = n
	}
	e = reGrouping.ReplaceAllString(e, " ")
	e = reDuration.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range reIdent.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if promqlWords[id] || reFuncAfter.MatchString(e[loc[1]:]) {
			continue
		}
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // the exponent or unit of a number, e.g. 1e3
		}
		out = append(out, id)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (pod) (fabric_connections{namespace="$namespace", pod=~"$pod"})`:                                        "fabric_connections",
		`histogram_quantile(0.99, sum by (le) (rate(fabric_fanout_latency_seconds_bucket{job="x"}[$__rate_interval])))`: "fabric_fanout_latency_seconds_bucket",
		`sum(rate(fabric_joins_total[5m])) / ignoring(result) group_left sum(rate(fabric_joins_total[5m]))`:             "fabric_joins_total fabric_joins_total",
		`max(fabric_draining) or vector(0)`:                   "fabric_draining",
		`count(count by (version) (fabric_build_info)) > 1e3`: "fabric_build_info",
		`label_replace(up, "a", "$1", "b", "(.*)")`:           "up",
	} {
		if got := strings.Join(metricNames(expr), " "); got != want {
			t.Errorf("metricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

type grafanaPanel struct {
	ID      int            `json:"id"`
	Type    string         `json:"type"`
	Title   string         `json:"title"`
	GridPos map[string]int `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

type grafanaDashboard struct {
	UID           string         `json:"uid"`
	Title         string         `json:"title"`
	SchemaVersion int            `json:"schemaVersion"`
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// TestGrafanaDashboard: the JSON parses, every panel queries only known
// metrics through the dashboard's datasource variable, and every listed
// metric is on the dashboard.
func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana/fabric-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("fabric-dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 {
		t.Errorf("dashboard: uid %q, title %q, schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if q, ok := v.Query.(string); ok && v.Type == "query" {
			// label_values(<series>, label): only the series names metrics.
			if m := reLabelValues.FindStringSubmatch(q); m != nil {
				q = m[1]
			}
			for _, name := range metricNames(q) {
				if !knownMetric(name) {
					t.Errorf("variable %s: query %q names %q, no Fabric metric", v.Name, q, name)
				}
			}
		}
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("dashboard: want a datasource variable named datasource, so it imports into any Grafana: %v", vars)
	}

	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func(ps []grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if ids[p.ID] {
				t.Errorf("%s: duplicate id", where)
			}
			ids[p.ID] = true
			if p.GridPos["w"] <= 0 || p.GridPos["h"] <= 0 || p.GridPos["x"]+p.GridPos["w"] > 24 {
				t.Errorf("%s: gridPos %v", where, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", where)
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource must be ${datasource}", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if refs[tg.RefID] {
					t.Errorf("%s: duplicate refId %q", where, tg.RefID)
				}
				refs[tg.RefID] = true
				if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
					t.Errorf("%s: unbalanced expression %q", where, tg.Expr)
				}
				names := metricNames(tg.Expr)
				if len(names) == 0 {
					t.Errorf("%s: expression %q selects no metric", where, tg.Expr)
				}
				for _, name := range names {
					if !knownMetric(name) {
						t.Errorf("%s: %q names %q, which is no Fabric metric (list: fabricMetrics)", where, tg.Expr, name)
					}
					used[strings.TrimSuffix(name, "_bucket")] = true
				}
				for _, h := range histogramMetrics {
					if strings.Contains(tg.Expr, h+"_bucket") && (!strings.Contains(tg.Expr, "histogram_quantile(") || !strings.Contains(tg.Expr, "le")) {
						t.Errorf("%s: %s_bucket outside histogram_quantile(..., sum by (le) ...)", where, h)
					}
				}
			}
		}
	}
	walk(d.Panels)
	for _, name := range fabricMetrics {
		if !used[name] {
			t.Errorf("dashboard shows no panel for %s", name)
		}
	}
}
