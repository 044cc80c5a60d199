// Validates a Kubernetes object against the API's OpenAPI schemas (npm
// kubernetes-models, and @kubernetes-models/prometheus-operator for the
// ServiceMonitor). Returns a list of error strings, empty when valid.
//
// Like `kubectl apply` (field validation Strict), an unknown or misspelled
// field is an error too. The packages' compiled validators do not report
// those, so the object is validated through a Proxy that records which
// fields the validator looked up: a field present in a typed object that
// the schema never asked for is unknown. (Maps such as labels are read
// whole, so their keys count as seen.)
"use strict";

// The npm package that models an API group.
const packageFor = (apiVersion) =>
  apiVersion.startsWith("monitoring.coreos.com/") ? "@kubernetes-models/prometheus-operator" : "kubernetes-models";

function modelFor(apiVersion, kind) {
  try {
    return require(`${packageFor(apiVersion)}/${apiVersion}/${kind}`)[kind] || null;
  } catch (e) {
    if (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return null;
    throw e;
  }
}

function validate(obj) {
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`unknown apiVersion/kind ${obj.apiVersion}/${obj.kind}`];
  const data = new Model(obj);
  const reads = new WeakMap();
  const proxies = new WeakMap();
  const wrap = (v) => {
    if (v === null || typeof v !== "object") return v;
    if (!proxies.has(v)) {
      reads.set(v, new Set());
      proxies.set(v, new Proxy(v, {
        get(target, key, receiver) {
          if (typeof key === "string") reads.get(target).add(key);
          return wrap(Reflect.get(target, key, receiver));
        },
      }));
    }
    return proxies.get(v);
  };
  const errors = [];
  try {
    Model.prototype.validate.call(wrap(data));
  } catch (e) {
    for (const err of e.errors || [{ instancePath: "", message: e.message }]) {
      errors.push(`${err.instancePath || "/"}: ${err.message}${err.params && err.params.allowedValues ? " " + JSON.stringify(err.params.allowedValues) : ""}`);
    }
  }
  const unknown = (v, where) => {
    if (Array.isArray(v)) return v.forEach((x, i) => unknown(x, `${where}/${i}`));
    if (v === null || typeof v !== "object") return;
    const seen = reads.get(v);
    for (const key of Object.keys(v)) {
      if (seen && seen.size && !seen.has(key)) errors.push(`${where}/${key}: unknown field`);
      unknown(v[key], `${where}/${key}`);
    }
  };
  unknown(data, "");
  return errors;
}

module.exports = { validate };
