// Checks deploy/k8s without a cluster: every kustomization renders (with
// tests/deploy/kustomize.js), every object validates against the Kubernetes
// API schemas (unknown fields included), every YAML file under deploy/k8s
// is used, and in each rendering the config's ports, the container ports,
// the probes, the Service and the ServiceMonitor agree; the admin API is on
// the pod's loopback and nothing exposes it (probes use the health-only
// port, listeners.health); the grace period
// outlasts the drain; the containers are locked down.
// Run by //tests/deploy:manifests_test (through npm_env.sh).
"use strict";
const assert = require("assert");
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");
const { render } = require("./kustomize.js");
const { validate } = require("./k8s_schema.js");

const ROOT = process.env.TEST_SRCDIR
  ? path.join(process.env.TEST_SRCDIR, process.env.TEST_WORKSPACE || "sluice")
  : path.resolve(__dirname, "../..");
const K8S = path.join(ROOT, "deploy/k8s");

function walk(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]);
}
const kustomizations = walk(K8S).filter((f) => path.basename(f) === "kustomization.yaml")
  .map((f) => path.dirname(f)).sort();

// --- helpers over a rendered variant -----------------------------------

const seconds = (d) => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(d);
  assert(m, `duration ${d}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
};
const portOf = (address) => Number(address.slice(address.lastIndexOf(":") + 1));
const hostOf = (address) => address.slice(0, address.lastIndexOf(":")).replace(/^\[|\]$/g, "");
const loopback = (address) => /^(127\.\d+\.\d+\.\d+|localhost|::1)$/.test(hostOf(address));
const preStopSleep = (c) => {
  const h = c.lifecycle && c.lifecycle.preStop;
  if (!h) return 0;
  if (h.sleep) return h.sleep.seconds;
  const cmd = h.exec && h.exec.command;
  return cmd && cmd[0] === "sleep" ? Number(cmd[1]) : 0;
};

function analyse(objs) {
  const [dep, ...more] = objs.filter((o) => o.kind === "Deployment");
  assert(dep && more.length === 0, "one Deployment");
  const pod = dep.spec.template.spec;
  const init = (pod.initContainers || []).filter((c) => c.name === "sluice");
  const classic = pod.containers.filter((c) => c.name === "sluice");
  assert.strictEqual(init.length + classic.length, 1, "one container named sluice");
  const sluice = init[0] || classic[0];
  const native = init.length === 1;
  if (native) assert.strictEqual(sluice.restartPolicy, "Always", "a native sidecar needs restartPolicy: Always");
  const apps = pod.containers.filter((c) => c !== sluice);
  assert(apps.length >= 1, "an application container");

  // The config: --config=PATH, PATH inside a ConfigMap volume mount.
  const arg = (sluice.args || []).find((a) => a.startsWith("--config="));
  assert(arg, "sluice args have --config=");
  const file = arg.slice("--config=".length);
  const mount = (sluice.volumeMounts || []).find((m) => file.startsWith(m.mountPath + "/"));
  assert(mount, `${file} is inside a volume mount`);
  assert(!mount.subPath, "no subPath: a subPath mount never sees ConfigMap updates");
  const volume = pod.volumes.find((v) => v.name === mount.name);
  assert(volume && volume.configMap, `volume ${mount.name} is a ConfigMap`);
  const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name === volume.configMap.name);
  assert(cm, `ConfigMap ${volume.configMap.name} is in the rendering`);
  const key = path.relative(mount.mountPath, file);
  assert(cm.data && key in cm.data, `ConfigMap ${cm.metadata.name} has key ${key}`);
  const config = YAML.parse(cm.data[key]);
  const flag = (name) => ((sluice.args || []).find((a) => a.startsWith(`--${name}=`)) || "").split("=")[1];
  const l = config.listeners || {};
  // The defaults of proto/sluice/config/v1/config.proto (health: off).
  const addresses = {
    data: flag("listen") || l.data || "0.0.0.0:8080",
    admin: flag("admin") || l.admin || "127.0.0.1:9901",
    metrics: flag("metrics") || l.metrics || "0.0.0.0:9090",
    health: flag("health") || l.health || "",
  };
  const ports = Object.fromEntries(Object.entries(addresses).map(([k, a]) => [k, a && portOf(a)]));
  return { dep, pod, sluice, native, apps, config, addresses, ports, objs };
}

// --- the checks ---------------------------------------------------------

const cases = [];
const check = (name, fn) => cases.push({ name, fn });

check("deploy/k8s has its base and overlays (nothing below passes by finding none)", () => {
  assert(kustomizations.includes(path.join(K8S, "base")), "deploy/k8s/base");
  assert(kustomizations.length >= 3, kustomizations.join(", "));
});

check("every YAML file under deploy/k8s is a kustomization, resource, generator file or patch", () => {
  const used = new Set();
  for (const dir of kustomizations) {
    const k = YAML.parse(fs.readFileSync(path.join(dir, "kustomization.yaml"), "utf8"));
    used.add(path.join(dir, "kustomization.yaml"));
    for (const r of k.resources || []) used.add(path.join(dir, r));
    for (const g of k.configMapGenerator || []) for (const f of g.files || []) used.add(path.join(dir, f.split("=").pop()));
    for (const p of k.patches || []) if (p.path) used.add(path.join(dir, p.path));
  }
  const orphans = walk(K8S).filter((f) => /\.ya?ml$/.test(f) && !used.has(f));
  assert(orphans.length === 0, `not used by any kustomization: ${orphans.map((f) => path.relative(ROOT, f))}`);
});

for (const dir of kustomizations) {
  const name = path.relative(ROOT, dir);
  let variant;
  const get = () => variant || (variant = analyse(render(dir)));

  check(`${name}: every object validates against the Kubernetes API schemas`, () => {
    const errors = render(dir).flatMap((o) => validate(o).map((e) => `${o.kind}/${o.metadata && o.metadata.name}${e}`));
    assert(errors.length === 0, errors.join("\n"));
  });

  check(`${name}: the API server's own rules (beyond the schemas) hold`, () => {
    const { dep, pod } = get();
    const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
    for (const o of get().objs) assert.match(o.metadata.name, dns1123, `${o.kind} name`);
    const labels = dep.spec.template.metadata.labels;
    for (const [k, v] of Object.entries(dep.spec.selector.matchLabels)) assert.strictEqual(labels[k], v, `selector ${k}`);
    for (const c of pod.initContainers || []) assert([undefined, "Always"].includes(c.restartPolicy), `${c.name}: restartPolicy`);
    for (const c of pod.containers) assert.strictEqual(c.restartPolicy, undefined, `${c.name}: restartPolicy only on init containers`);
    const all = [...(pod.initContainers || []), ...pod.containers];
    assert.strictEqual(new Set(all.map((c) => c.name)).size, all.length, "container names unique");
    for (const c of all) {
      assert.match(c.name, dns1123);
      for (const p of c.ports || []) {
        assert(p.containerPort >= 1 && p.containerPort <= 65535, `${c.name}: port ${p.containerPort}`);
        assert(p.name.length <= 15 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(p.name) && /[a-z]/.test(p.name), `${c.name}: port name ${p.name}`);
      }
      for (const m of c.volumeMounts || []) assert(pod.volumes.some((v) => v.name === m.name), `${c.name}: volume ${m.name}`);
    }
  });

  check(`${name}: container ports are the config's listeners beyond loopback`, () => {
    const { sluice, ports } = get();
    const byName = Object.fromEntries(sluice.ports.map((p) => [p.name, p.containerPort]));
    assert.deepStrictEqual(byName, { grpc: ports.data, health: ports.health, metrics: ports.metrics });
  });

  check(`${name}: the admin API is on the pod's loopback and nothing exposes it`, () => {
    const { pod, sluice, addresses, ports } = get();
    // Any pod could otherwise SetLimit or Drain this sidecar.
    assert(loopback(addresses.admin), `listeners.admin ${addresses.admin} must be a loopback address`);
    // With the node's network namespace, loopback would be the node's.
    assert(!pod.hostNetwork, "no hostNetwork");
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      for (const p of c.ports || []) {
        assert.notStrictEqual(p.containerPort, ports.admin, `${c.name}: no container port for admin`);
        assert(!p.hostPort, `${c.name}: no hostPort`);
      }
    }
    // The probes' port serves health only (e2e health_listener_test); it
    // must be reachable from the kubelet, so not loopback, and its own.
    assert(addresses.health, "listeners.health is set (the probes' port)");
    assert(!loopback(addresses.health), `listeners.health ${addresses.health} must be reachable from the kubelet (not loopback)`);
    assert.notStrictEqual(ports.health, ports.admin, "health and admin are different ports");
  });

  check(`${name}: readiness and liveness are gRPC probes of the health-only port`, () => {
    const { sluice, ports, native } = get();
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      const p = sluice[probe];
      assert(p && p.grpc, `${probe} is a grpc probe`);
      assert.strictEqual(p.grpc.port, ports.health, `${probe} port`);
    }
    assert(!sluice.readinessProbe.grpc.service,
           'readiness checks the overall status (service "")');
    // The service sidecar_test checks is SERVING on the real binary.
    assert.strictEqual(sluice.livenessProbe.grpc.service, "liveness",
                       "liveness checks the process-only service");
    // A startup probe on the overall status would wait for the app, which a
    // native sidecar's app only starts after: a deadlock.
    if (native) assert(!sluice.startupProbe, "no startupProbe on the native sidecar");
    const live = sluice.livenessProbe;
    assert((live.periodSeconds || 10) * (live.failureThreshold || 3) > seconds(get().config.drain_timeout || "30s"),
           "liveness tolerates a whole drain");
  });

  check(`${name}: the Service targets Sluice's data port (and metrics), never admin, health or the app`, () => {
    const { objs, sluice, ports } = get();
    const services = objs.filter((o) => o.kind === "Service");
    assert(services.length >= 1, "a Service");
    const labels = get().dep.spec.template.metadata.labels;
    for (const svc of services) {
      for (const [k, v] of Object.entries(svc.spec.selector)) assert.strictEqual(labels[k], v, `selector ${k}`);
      const targets = svc.spec.ports.map((p) => {
        const t = p.targetPort === undefined ? p.port : p.targetPort;
        const cp = sluice.ports.find((c) => c.name === t || c.containerPort === t);
        assert(cp, `${svc.metadata.name} port ${p.name} targets a Sluice container port (got ${t})`);
        return cp.containerPort;
      });
      assert(targets.includes(ports.data), "a port targets the data port");
      assert(!targets.includes(ports.admin), "the admin port is not in the Service");
      assert(!targets.includes(ports.health), "the health port is not in the Service");
    }
  });

  check(`${name}: Prometheus annotations and the ServiceMonitor scrape the metrics port`, () => {
    const { objs, dep, sluice, ports } = get();
    const a = dep.spec.template.metadata.annotations || {};
    assert.strictEqual(a["prometheus.io/scrape"], "true");
    assert.strictEqual(Number(a["prometheus.io/port"]), ports.metrics);
    assert.strictEqual(a["prometheus.io/path"], "/metrics");
    const monitors = objs.filter((o) => o.kind === "ServiceMonitor");
    assert.strictEqual(monitors.length, 1, "one ServiceMonitor");
    for (const sm of monitors) {
      const svc = objs.find((o) => o.kind === "Service" &&
        Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => (o.metadata.labels || {})[k] === v));
      assert(svc, "the ServiceMonitor selects a Service");
      for (const ep of sm.spec.endpoints) {
        const sp = svc.spec.ports.find((p) => p.name === ep.port);
        assert(sp, `Service port named ${ep.port}`);
        const cp = sluice.ports.find((c) => c.name === sp.targetPort || c.containerPort === sp.targetPort);
        assert.strictEqual(cp && cp.containerPort, ports.metrics, "the endpoint is Sluice's metrics port");
        assert.strictEqual(ep.path || "/metrics", "/metrics");
      }
    }
  });

  check(`${name}: terminationGracePeriodSeconds outlasts the drain`, () => {
    const { pod, apps, native, config } = get();
    const drain = seconds(config.drain_timeout || "30s");
    const grace = pod.terminationGracePeriodSeconds;
    const appStop = Math.max(...apps.map(preStopSleep));
    if (native) {
      // The app stops first (its preStop, then SIGTERM); then Sluice drains.
      assert(grace >= appStop + drain + 10, `grace ${grace}s >= app preStop ${appStop}s + drain ${drain}s + 10s`);
    } else {
      // SIGTERM reaches both at once: the app must outlive Sluice's drain.
      assert(appStop >= drain, `app preStop ${appStop}s >= drain ${drain}s`);
      assert(grace >= appStop + 10, `grace ${grace}s >= app preStop ${appStop}s + 10s`);
    }
  });

  check(`${name}: containers run as non-root, read-only, no capabilities, with resources`, () => {
    const { pod, sluice, apps } = get();
    const podSc = pod.securityContext || {};
    for (const c of [sluice, ...apps]) {
      const sc = c.securityContext || {};
      assert(sc.runAsNonRoot === true || (podSc.runAsNonRoot === true && sc.runAsNonRoot !== false), `${c.name}: runAsNonRoot`);
      assert.strictEqual(sc.readOnlyRootFilesystem, true, `${c.name}: readOnlyRootFilesystem`);
      assert.strictEqual(sc.allowPrivilegeEscalation, false, `${c.name}: allowPrivilegeEscalation`);
      assert.deepStrictEqual((sc.capabilities || {}).drop, ["ALL"], `${c.name}: capabilities drop ALL`);
      assert(!(sc.capabilities || {}).add, `${c.name}: no capabilities added`);
      const r = c.resources || {};
      assert(r.requests && r.requests.cpu && r.requests.memory && r.limits && r.limits.memory, `${c.name}: resources`);
    }
  });

  check(`${name}: the config's required upstream is the app on loopback`, () => {
    const { config, apps } = get();
    const required = (config.upstreams || []).filter((u) => u.required);
    assert.strictEqual(required.length, 1, "one required upstream (readiness follows it)");
    assert.match(required[0].target, /^(127\.0\.0\.1|localhost|\[::1\]):\d+$/);
    const listens = apps.flatMap((c) => (c.args || []).filter((a) => a.startsWith("--listen=")).map((a) => a.split("=")[1]));
    for (const l of listens) assert.strictEqual(l, required[0].target, "the app listens where Sluice sends");
  });
}

// --- runner: one JUnit test case per check ------------------------------

let failed = 0;
const results = cases.map(({ name, fn }) => {
  try {
    fn();
    console.log(`ok   ${name}`);
    return { name };
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${String(e.message).replace(/\n/g, "\n     ")}`);
    return { name, failure: e.stack };
  }
});
if (process.env.XML_OUTPUT_FILE) {
  const esc = (s) => String(s).replace(/[<>&"]/g, (c) => ({ "<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;" }[c]));
  const xml = [`<testsuites><testsuite name="manifests_test" tests="${results.length}" failures="${failed}">`,
    ...results.map((r) => `<testcase name="${esc(r.name)}">${r.failure ? `<failure message="failed">${esc(r.failure)}</failure>` : ""}</testcase>`),
    "</testsuite></testsuites>"].join("\n");
  fs.writeFileSync(process.env.XML_OUTPUT_FILE, xml);
}
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed || results.length === 0 ? 1 : 0);
