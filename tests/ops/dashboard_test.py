"""deploy/grafana/sluice-dashboard.json checked structurally (Grafana is not
in Debian), and the alerts' runbooks:
- the dashboard has the rows an operator expects, in order, each with
  panels; every panel has a unique id, a known type, a place on the
  24-column grid that overlaps no other, the datasource variable, and
  queries with unique refIds;
- the variables: a Prometheus datasource variable, and namespace, pod and
  route as label_values queries through it;
- no dangling query: every `$variable` a query uses is defined (or one of
  Grafana's own), every series a query names is a metric docs/metrics.md
  lists, a recording rule of deploy/prometheus/sluice-rules.yaml, or `up`,
  and each of those carries the namespace and pod filters;
- every alert of the rules has its runbook section in docs/operations.md
  (the runbook_url anchor), and docs/metrics.md links each of them.
Whether the queries run and return data against a real Sluice:
prometheus_e2e_test."""

import json
import os
import re
import unittest

ROOT = os.environ.get("TEST_SRCDIR") and os.path.join(
    os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "sluice"))
if not ROOT or not os.path.isdir(ROOT):
    ROOT = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


DASH = json.loads(read("deploy/grafana/sluice-dashboard.json"))
RULES = read("deploy/prometheus/sluice-rules.yaml")
METRICS_MD = read("docs/metrics.md")
OPERATIONS_MD = read("docs/operations.md")

ROWS = ["Traffic", "Latency", "Limits", "Streams", "Upstream health", "Sluice process", "Redis"]
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "heatmap", "text"}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms"}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "by", "without", "on", "ignoring", "group_left",
    "group_right", "and", "or", "unless", "rate", "irate", "increase", "histogram_quantile",
    "present_over_time", "max_over_time", "clamp_min", "le", "bool", "offset", "topk",
    "label_values"}  # the last: Grafana's, in the variables


def recorded():
    return set(re.findall(r"^\s+- record: (\S+)$", RULES, re.M))


def documented():
    """Metric names in docs/metrics.md's tables (`name` in a first column)."""
    return set(re.findall(r"^\| `([a-z_]+)` \|", METRICS_MD, re.M))


def alerts():
    return re.findall(r"^\s+- alert: (\S+)$", RULES, re.M)


def selectors(expr):
    """(name, label matchers) of every series selector with braces."""
    return re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr)


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


class DashboardTest(unittest.TestCase):
    def panels(self):
        return [p for p in DASH["panels"] if p["type"] != "row"]

    def test_rows_in_order_each_with_panels(self):
        self.assertEqual([p["title"] for p in DASH["panels"] if p["type"] == "row"], ROWS)
        current, count = None, {}
        for p in DASH["panels"]:
            if p["type"] == "row":
                current = p["title"]
                self.assertFalse(p.get("collapsed"), current)
                count[current] = 0
            else:
                self.assertIsNotNone(current, f"panel {p['title']} above the first row")
                count[current] += 1
        for row, n in count.items():
            self.assertGreater(n, 0, f"row {row} has no panel")

    def test_panels_ids_types_and_grid(self):
        ids = [p["id"] for p in DASH["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "duplicate panel ids")
        cells = {}
        for p in DASH["panels"]:
            g = p["gridPos"]
            for k in ("x", "y", "w", "h"):
                self.assertIsInstance(g[k], int, f"{p['title']}: gridPos.{k}")
            self.assertTrue(0 <= g["x"] and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, f"{p['title']} overlaps {cells.get((x, y))}")
                    cells[(x, y)] = p["title"]
            if p["type"] == "row":
                continue
            self.assertIn(p["type"], PANEL_TYPES, p["title"])
            self.assertTrue(p["title"] and p.get("description"), p["title"])
            self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"},
                             p["title"])
            self.assertTrue(p["targets"], f"{p['title']}: no query")
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), f"{p['title']}: duplicate refId")
            for t in p["targets"]:
                self.assertEqual(t["datasource"], p["datasource"], p["title"])
                self.assertTrue(t["expr"].strip(), p["title"])
        titles = [p["title"] for p in self.panels()]
        self.assertEqual(len(titles), len(set(titles)), "duplicate panel titles")

    def test_variables(self):
        variables = {v["name"]: v for v in DASH["templating"]["list"]}
        self.assertEqual(list(variables), ["datasource", "namespace", "pod", "route"])
        ds = variables["datasource"]
        self.assertEqual((ds["type"], ds["query"]), ("datasource", "prometheus"))
        for name in ("namespace", "pod", "route"):
            v = variables[name]
            self.assertEqual(v["type"], "query", name)
            self.assertEqual(v["datasource"], {"type": "prometheus", "uid": "${datasource}"})
            self.assertRegex(v["query"]["query"], rf"^label_values\(.*, {name}\)$")
            self.assertEqual(v["definition"], v["query"]["query"])
            self.assertTrue(v["multi"] and v["includeAll"], name)
            self.assertEqual(v["allValue"], ".*", name)
        # Each variable narrows the next.
        self.assertIn('namespace=~"$namespace"', variables["pod"]["query"]["query"])
        self.assertIn('pod=~"$pod"', variables["route"]["query"]["query"])

    def test_no_dangling_queries(self):
        defined = {v["name"] for v in DASH["templating"]["list"]} | GRAFANA_VARIABLES
        known = documented() | recorded() | {"up"}
        self.assertIn("sluice_rejections_total", known)  # the doc parse works
        self.assertGreater(len(recorded()), 5)
        exprs = [(p["title"], t["expr"]) for p in self.panels() for t in p["targets"]]
        exprs += [(v["name"], v["query"]["query"]) for v in DASH["templating"]["list"]
                  if v["type"] == "query"]
        for title, expr in exprs:
            for var in re.findall(r"\$(\w+)", expr):
                self.assertIn(var, defined, f"{title}: ${var}")
            self.assertEqual(expr.count("("), expr.count(")"), f"{title}: parentheses")
            sels = selectors(expr)
            bare_metric = re.fullmatch(r"label_values\(([a-zA-Z_:][\w:]*), \w+\)", expr)
            if bare_metric:  # label_values(metric, label): a variable over all of it
                sels = [(bare_metric.group(1), "")]
            self.assertTrue(sels, f"{title}: no series selector")
            for name, matchers in sels:
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                self.assertTrue(name in known or base in known, f"{title}: unknown series {name}")
                if title not in ("namespace",):
                    self.assertIn('namespace=~"$namespace"', matchers, f"{title}: {name}")
                if title not in ("namespace", "pod"):
                    self.assertIn('pod=~"$pod"', matchers, f"{title}: {name}")
            # Any bare word left is PromQL's own, or a series without the filters.
            bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"|\$\w+|(?<![\w:])[0-9.]+", " ", expr)
            for word in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare):
                if word in {n for n, _ in sels} or word in PROMQL_WORDS:
                    continue
                if re.search(rf"^label_values\(.*, {word}\)$", expr):
                    continue  # the variable's label
                # Label names inside by (...) / on (...).
                self.assertRegex(expr, rf"(by|on|without|ignoring) \([^)]*\b{word}\b",
                                 f"{title}: {word} is neither PromQL nor a filtered series")

    def test_route_filter_where_the_series_has_a_route(self):
        for p in self.panels():
            for t in p["targets"]:
                for name, matchers in selectors(t["expr"]):
                    if name.startswith(("grpc_", "sluice_redis_", "up", "sluice_calls_in_flight",
                                        "sluice_build_info", "sluice_config_", "sluice_ready",
                                        "sluice_upstream_serving",
                                        "sluice_resident_memory_bytes",
                                        "sluice_memory_ceiling_bytes")):
                        continue
                    self.assertIn('route=~"$route"', matchers, f"{p['title']}: {name}")


class RunbookTest(unittest.TestCase):
    def test_every_alert_has_a_runbook_section(self):
        names = alerts()
        self.assertGreaterEqual(len(names), 10)
        anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", OPERATIONS_MD, re.M)}
        for name in names:
            self.assertIn(name.lower(), anchors, f"docs/operations.md: no section {name}")
            self.assertIn(f"runbook_url: docs/operations.md#{name.lower()}", RULES, name)

    def test_metrics_md_links_every_runbook(self):
        for name in alerts():
            self.assertIn(f"(operations.md#{name.lower()})", METRICS_MD, name)

    def test_operations_md_describes_every_dashboard_row(self):
        anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", OPERATIONS_MD, re.M)}
        for row in ROWS:
            self.assertIn(slug(row), anchors, f"docs/operations.md: no section for row {row}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
