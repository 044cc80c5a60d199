// deploy/prometheus/prometheusrule.yaml against the prometheus-operator's
// types (npm @kubernetes-models/prometheus-operator, unknown fields
// included: tests/deploy/k8s_schema.js), and its groups equal to those of
// deploy/prometheus/sluice-rules.yaml, the file a Prometheus without the
// operator loads (and promtool checks: //tests/ops:rules_test).
// Run by //tests/ops:prometheusrule_test (through tests/deploy/npm_env.sh).
"use strict";
const assert = require("assert");
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const ROOT = process.env.TEST_SRCDIR
  ? path.join(process.env.TEST_SRCDIR, process.env.TEST_WORKSPACE || "sluice")
  : path.resolve(__dirname, "../..");
const { validate } = require(path.join(ROOT, "tests/deploy/k8s_schema.js"));

const load = (rel) => {
  const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(ROOT, rel), "utf8"));
  assert.strictEqual(docs.length, 1, `${rel}: one document`);
  assert.deepStrictEqual(docs[0].errors, [], `${rel}: YAML errors`);
  return docs[0].toJS();
};

let failed = 0;
const check = (name, fn) => {
  try {
    fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${e.message.split("\n").join("\n     ")}`);
  }
};

const rule = load("deploy/prometheus/prometheusrule.yaml");
const file = load("deploy/prometheus/sluice-rules.yaml");

check("the PrometheusRule validates against the prometheus-operator types", () => {
  assert.strictEqual(rule.apiVersion, "monitoring.coreos.com/v1");
  assert.strictEqual(rule.kind, "PrometheusRule");
  assert.deepStrictEqual(validate(rule), []);
});

check("a misspelled field is an error (the validator sees unknown fields)", () => {
  const bad = JSON.parse(JSON.stringify(rule));
  bad.spec.groups[1].rules[0].lables = bad.spec.groups[1].rules[0].labels;
  const errors = validate(bad);
  assert(errors.some((e) => e.includes("lables: unknown field")), JSON.stringify(errors));
});

check("its groups are those of sluice-rules.yaml", () => {
  assert.deepStrictEqual(Object.keys(file), ["groups"]);
  assert.deepStrictEqual(rule.spec.groups, file.groups);
});

check("every alert has a severity, a summary, a description and a runbook", () => {
  const alerts = file.groups.flatMap((g) => g.rules).filter((r) => r.alert);
  assert(alerts.length >= 10, `${alerts.length} alerts`);
  for (const a of alerts) {
    assert(["warning", "critical"].includes(a.labels.severity), `${a.alert}: severity`);
    assert(a.annotations.summary && a.annotations.description, `${a.alert}: summary, description`);
    assert.strictEqual(a.annotations.runbook_url, `docs/operations.md#${a.alert.toLowerCase()}`);
  }
});

console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
