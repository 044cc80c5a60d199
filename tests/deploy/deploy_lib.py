"""Shared by the tests/deploy Python tests: the repository root (runfiles),
the rendered kustomizations (through kustomize.js), YAML as JSON (through
the npm `yaml` package) and a small Dockerfile reader. Node and NODE_PATH
come from npm_env.sh, which runs these tests."""

import json
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("TEST_SRCDIR") and os.path.join(
    os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "sluice"))
if not ROOT or not os.path.isdir(ROOT):
    ROOT = os.path.realpath(os.path.join(HERE, "..", ".."))
# The e2e harness (//tests/e2e/python:harness.py, in runfiles).
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e", "python"))

K8S = os.path.join(ROOT, "deploy", "k8s")
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")


def kustomizations():
    """Every folder under deploy/k8s with a kustomization.yaml, sorted."""
    found = []
    for dirpath, _, files in os.walk(K8S, followlinks=True):
        if "kustomization.yaml" in files:
            found.append(dirpath)
    return sorted(found)


def render(directory):
    """The objects a kustomization renders to (kustomize.js)."""
    out = subprocess.run(["node", os.path.join(HERE, "kustomize.js"), directory],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def yaml_file(path):
    """A YAML file parsed by the npm `yaml` package, as Python values."""
    script = "process.stdout.write(JSON.stringify(require('yaml').parse(" \
             "require('fs').readFileSync(process.argv[1], 'utf8'))))"
    return json.loads(subprocess.run(["node", "-e", script, path], check=True,
                                     capture_output=True, text=True).stdout)


def sluice_container(objs):
    """(pod spec, the container named sluice) of the rendered Deployment."""
    (dep,) = [o for o in objs if o["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "sluice"]
    return pod, c


class Dockerfile:
    """The instructions of a Dockerfile, per stage: continuation lines joined,
    comments dropped. stages: list of (FROM line, [(INSTRUCTION, args)])."""

    def __init__(self, path):
        text = open(path).read()
        text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", text)  # continuations
        self.stages = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            instr, _, args = line.partition(" ")
            instr = instr.upper()
            if instr == "FROM":
                self.stages.append((args.strip(), []))
            else:
                self.stages[-1][1].append((instr, args.strip()))

    def get(self, stage, instr):
        return [a for i, a in self.stages[stage][1] if i == instr]

    @staticmethod
    def exec_form(args):
        """["a", "b"] (JSON) or shell words."""
        return json.loads(args) if args.startswith("[") else shlex.split(args)

    @staticmethod
    def commands(run_args):
        """The shell commands of a RUN line, split at && (each a word list)."""
        return [shlex.split(c) for c in re.split(r"&&|;", run_args) if c.strip()]
