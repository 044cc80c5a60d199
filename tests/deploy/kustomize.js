// A tiny kustomize for the subset deploy/k8s uses (no kustomize binary is
// available offline): resources (files and folders), namespace, images,
// configMapGenerator (files, behavior create/replace, with
// disableNameSuffixHash) and JSON 6902 patches (inline or a file, with a
// target kind/name). Anything else in a kustomization.yaml is an error, so a
// field this renderer does not understand can never be silently skipped.
//
//   node kustomize.js DIR    prints the rendered objects as a JSON array
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const KNOWN = new Set(["apiVersion", "kind", "resources", "namespace", "images",
                       "configMapGenerator", "patches"]);
const CLUSTER_SCOPED = new Set(["ClusterRole", "ClusterRoleBinding",
                                "CustomResourceDefinition"]);

function parseAll(file) {
  return YAML.parseAllDocuments(fs.readFileSync(file, "utf8")).map((doc) => {
    if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0].message}`);
    return doc.toJS();
  }).filter((o) => o != null);
}

function render(dir) {
  const kfile = path.join(dir, "kustomization.yaml");
  const [k] = parseAll(kfile);
  for (const key of Object.keys(k)) {
    if (!KNOWN.has(key)) throw new Error(`${kfile}: "${key}" is not supported by tests/deploy/kustomize.js`);
  }
  if (k.kind !== "Kustomization") throw new Error(`${kfile}: kind must be Kustomization`);
  let objs = [];
  for (const r of k.resources || []) {
    const p = path.join(dir, r);
    objs.push(...(fs.statSync(p).isDirectory() ? render(p) : parseAll(p)));
  }
  for (const g of k.configMapGenerator || []) generateConfigMap(dir, g, objs);
  for (const p of k.patches || []) applyPatch(dir, p, objs);
  if (k.namespace) {
    for (const o of objs) {
      if (o.kind === "Namespace") o.metadata.name = k.namespace;  // as kustomize does
      else if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    }
  }
  for (const img of k.images || []) setImage(img, objs);
  return objs;
}

function generateConfigMap(dir, g, objs) {
  if (!(g.options && g.options.disableNameSuffixHash)) {
    throw new Error(`configMapGenerator ${g.name}: only disableNameSuffixHash: true is supported`);
  }
  const data = {};
  for (const f of g.files || []) {
    const [key, file] = f.includes("=") ? f.split("=", 2) : [path.basename(f), f];
    data[key] = fs.readFileSync(path.join(dir, file), "utf8");
  }
  const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data };
  const i = objs.findIndex((o) => o.kind === "ConfigMap" && o.metadata.name === g.name);
  const behavior = g.behavior || "create";
  if (behavior === "create" && i < 0) objs.push(cm);
  else if (behavior === "replace" && i >= 0) objs[i] = { ...cm, metadata: objs[i].metadata };
  else throw new Error(`configMapGenerator ${g.name}: behavior ${behavior} with${i < 0 ? "out" : ""} a ConfigMap of that name`);
}

function applyPatch(dir, p, objs) {
  const ops = p.path ? parseAll(path.join(dir, p.path))[0] : YAML.parse(p.patch);
  if (!Array.isArray(ops)) throw new Error("only JSON 6902 patches (a list of ops) are supported");
  const t = p.target || {};
  const hits = objs.filter((o) => (!t.kind || o.kind === t.kind) && (!t.name || o.metadata.name === t.name));
  if (hits.length === 0) throw new Error(`patch target ${JSON.stringify(t)} matches nothing`);
  for (const o of hits) for (const op of ops) jsonPatch(o, op);
}

// RFC 6902 on a plain object: add, remove, replace, move, copy, test.
function jsonPatch(doc, op) {
  const split = (ptr) => ptr.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  const locate = (ptr) => {
    const parts = split(ptr);
    const last = parts.pop();
    let parent = doc;
    for (const part of parts) {
      parent = parent[part];
      if (parent === undefined) throw new Error(`JSON patch: ${ptr} does not exist`);
    }
    return [parent, last];
  };
  const get = (ptr) => {
    const [parent, key] = locate(ptr);
    if (!(key in parent)) throw new Error(`JSON patch: ${ptr} does not exist`);
    return parent[key];
  };
  const remove = (ptr) => {
    const value = get(ptr);
    const [parent, key] = locate(ptr);
    Array.isArray(parent) ? parent.splice(Number(key), 1) : delete parent[key];
    return value;
  };
  const add = (ptr, value) => {
    const [parent, key] = locate(ptr);
    if (Array.isArray(parent)) parent.splice(key === "-" ? parent.length : Number(key), 0, value);
    else parent[key] = value;
  };
  const clone = (v) => JSON.parse(JSON.stringify(v));
  switch (op.op) {
    case "add": add(op.path, clone(op.value)); break;
    case "remove": remove(op.path); break;
    case "replace": remove(op.path); add(op.path, clone(op.value)); break;
    case "move": add(op.path, remove(op.from)); break;
    case "copy": add(op.path, clone(get(op.from))); break;
    case "test":
      if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value)) throw new Error(`JSON patch test failed at ${op.path}`);
      break;
    default: throw new Error(`JSON patch: unknown op ${op.op}`);
  }
}

function setImage(img, objs) {
  const visit = (containers) => {
    for (const c of containers || []) {
      const m = /^(.*?)(?::([^:/]+))?(@.*)?$/.exec(c.image);
      if (m[1] !== img.name) continue;
      c.image = (img.newName || m[1]) + (img.digest ? `@${img.digest}` : `:${img.newTag || m[2] || "latest"}`);
    }
  };
  for (const o of objs) {
    const spec = o.spec && o.spec.template && o.spec.template.spec;
    if (spec) { visit(spec.initContainers); visit(spec.containers); }
  }
}

module.exports = { render };

if (require.main === module) {
  process.stdout.write(JSON.stringify(render(process.argv[2]), null, 1) + "\n");
}
