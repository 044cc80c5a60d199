"""Checks deploy/Dockerfile without Docker: dockerfilelint finds nothing;
the runtime stage installs exactly the Debian packages that own the shared
libraries `ldd` reports for the built binaries (so the image starts); the
build stage runs the README's and Makefile's commands; the user, ports,
entrypoint and config path agree with the binaries and deploy/k8s.
Run by //tests/deploy:dockerfile_test (through npm_env.sh)."""

import json
import os
import re
import subprocess
import unittest

import deploy_lib as lib
from deploy_lib import ROOT, Dockerfile

BINARIES = {  # name in the image -> the built binary in runfiles
    "sluice": os.path.join(ROOT, "server", "sluice"),
    "sluicectl": os.path.join(ROOT, "client", "sluicectl", "sluicectl"),
    "demo_upstream": os.path.join(ROOT, "server", "demo", "demo_upstream"),
}
BIN_DIR = "/usr/local/bin"


def makefile():
    """The Makefile (//:Makefile, in runfiles), its `NAME = value` variables
    (with backslash continuations) expanded where $(NAME) is used."""
    text = open(os.path.join(ROOT, "Makefile")).read()
    joined = re.sub(r"\\\n\s*", " ", text)
    variables = dict(re.findall(r"^([A-Z_]+)\s*=\s*(.*)$", joined, re.M))
    return re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)


def shared_library_packages(binaries):
    """{Debian package: [libraries]} for every library ldd resolves."""
    libs = set()
    for b in binaries:
        out = subprocess.run(["ldd", b], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"=>\s+(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
            if m:
                libs.add(m.group(1))
    # dpkg records /lib or /usr/lib paths (merged /usr): ask for every
    # spelling of each library and of its real path, in one dpkg-query.
    spellings = {}
    for lib in libs:
        for p in {lib, os.path.realpath(lib)}:
            for q in {p, re.sub(r"^/usr/lib/", "/lib/", p), re.sub(r"^/lib/", "/usr/lib/", p)}:
                spellings.setdefault(q, lib)
    out = subprocess.run(["dpkg-query", "-S"] + sorted(spellings),
                         capture_output=True, text=True).stdout
    owner_of = {}
    for line in out.splitlines():
        pkg, _, path = line.partition(": ")
        if path in spellings:
            owner_of[spellings[path]] = pkg.split(":")[0]
    owners = {}
    for lib in sorted(libs):
        owners.setdefault(owner_of.get(lib, f"<no package owns {lib}>"), []).append(lib)
    return owners


def bazel_builds(text):
    """(flags, targets) of every `bazel build` command line in text."""
    builds = []
    for m in re.finditer(r"bazel build ([^\n&#]*)", text):
        words = m.group(1).split()
        flags, targets, i = [], [], 0
        while i < len(words):
            if words[i] == "-c":
                flags.append("-c " + words[i + 1])
                i += 2
                continue
            (flags if words[i].startswith("-") else targets).append(words[i])
            i += 1
        builds.append((flags, targets))
    return builds


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.df = Dockerfile(lib.DOCKERFILE)
        cls.build, cls.runtime = 0, len(cls.df.stages) - 1

    def test_dockerfilelint_finds_nothing(self):
        # On standard input: given a path, it refuses a (runfiles) symlink.
        r = subprocess.run(["dockerfilelint", "-o", "json", "-"], input=open(lib.DOCKERFILE).read(),
                           capture_output=True, text=True)
        self.assertTrue(r.stdout.startswith("{"), r.stdout + r.stderr)
        issues = json.loads(r.stdout)["files"][0]["issues"]
        self.assertEqual(issues, [], json.dumps(issues, indent=1))
        self.assertEqual(r.returncode, 0)

    def test_two_stages_on_debian_bookworm(self):
        froms = [f for f, _ in self.df.stages]
        self.assertEqual(len(froms), 2, froms)
        self.assertRegex(froms[0], r"^debian:bookworm AS build$")
        self.assertEqual(froms[1], "debian:bookworm-slim")

    # Sanitizer builds (--config=asan/tsan set SLUICE_SANITIZER) link
    # libasan/libubsan/libtsan, which no runtime image carries.
    @unittest.skipIf(os.environ.get("SLUICE_SANITIZER"),
                     "sanitizer build links the sanitizer runtimes")
    def test_runtime_installs_exactly_the_packages_of_the_shared_libraries(self):
        listed = []
        for run in self.df.get(self.runtime, "RUN"):
            for cmd in Dockerfile.commands(run):
                if cmd[:2] == ["apt-get", "install"]:
                    listed += [w for w in cmd[2:] if not w.startswith("-")]
        needed = shared_library_packages(BINARIES.values())
        missing = {p: libs for p, libs in needed.items() if p not in listed}
        self.assertEqual(missing, {}, "libraries whose package the runtime stage does not install")
        self.assertEqual(sorted(set(listed) - set(needed)), [],
                         "installed but no binary links against them")

    def test_build_stage_runs_the_readme_and_makefile_commands(self):
        runs = [c for r in self.df.get(self.build, "RUN") for c in Dockerfile.commands(r)]
        # The dependencies: scripts/install-deps, as `make` (README) runs it.
        self.assertIn(["scripts/install-deps"], runs)
        make = makefile()
        self.assertRegex(make, r"\ndeps:\n\t@?scripts/install-deps\n")
        # Bazel: only flags the Makefile's build uses, only targets the
        # README or the Makefile build.
        docs = bazel_builds(make) + bazel_builds(open(os.path.join(ROOT, "README.md")).read())
        doc_flags = {f for flags, _ in bazel_builds(make) for f in flags}
        doc_targets = {t for _, targets in docs for t in targets}
        built = set()
        for flags, targets in bazel_builds(" && ".join(" ".join(c) for c in runs)):
            self.assertLessEqual(set(flags), doc_flags)
            self.assertLessEqual(set(targets), doc_targets)
            built |= set(targets)
        # Every binary copied out of bazel-bin is one that was built, and
        # they are the image's binaries.
        installed = {}
        for cmd in runs:
            if cmd[0] == "install":
                for src in [w for w in cmd if w.startswith("bazel-bin/")]:
                    pkg, name = os.path.split(src[len("bazel-bin/"):])
                    self.assertIn(f"//{pkg}:{name}", built)
                    installed[name] = src
        self.assertEqual(sorted(installed), sorted(BINARIES))
        self.assertIn(f"/out/ {BIN_DIR}/", [c.replace("--from=build ", "")
                                           for c in self.df.get(self.runtime, "COPY")])

    def test_user_is_numeric_non_root_and_matches_the_manifests(self):
        (user,) = self.df.get(self.runtime, "USER")
        uid, _, gid = user.partition(":")
        self.assertTrue(uid.isdigit() and int(uid) > 0, user)
        self.assertRegex(" ".join(self.df.get(self.runtime, "RUN")), rf"useradd .*--uid {uid}\b")
        for d in lib.kustomizations():
            pod, c = lib.sluice_container(lib.render(d))
            for sc in (pod.get("securityContext", {}), c.get("securityContext", {})):
                if "runAsUser" in sc:
                    self.assertEqual(sc["runAsUser"], int(uid), d)
                if gid and "runAsGroup" in sc:
                    self.assertEqual(sc["runAsGroup"], int(gid), d)

    def test_ports_entrypoint_and_config_agree(self):
        self.assertEqual(self.df.get(self.runtime, "STOPSIGNAL"), ["SIGTERM"])
        (entry,) = self.df.get(self.runtime, "ENTRYPOINT")
        self.assertEqual(Dockerfile.exec_form(entry), [f"{BIN_DIR}/sluice"])
        # The default config: CMD names the file COPY puts there.
        (cmd,) = self.df.get(self.runtime, "CMD")
        copies = dict(reversed(c.split()) for c in self.df.get(self.runtime, "COPY")
                      if not c.startswith("--from"))
        (config_arg,) = Dockerfile.exec_form(cmd)
        config_path = config_arg.removeprefix("--config=")
        self.assertIn(config_path, copies)
        source = os.path.join(ROOT, copies[config_path])
        self.assertTrue(os.path.exists(source), source)
        listeners = lib.yaml_file(source)["listeners"]
        # EXPOSE: the listeners beyond loopback. The admin API is on
        # loopback (only the pod's own containers reach it) and not exposed.
        self.assertTrue(listeners["admin"].startswith("127."), listeners)
        ports = sorted(int(a.rsplit(":", 1)[1]) for a in listeners.values()
                       if not a.startswith("127."))
        exposed = sorted(int(p) for e in self.df.get(self.runtime, "EXPOSE") for p in e.split())
        self.assertEqual(exposed, ports)
        self.assertNotIn(int(listeners["admin"].rsplit(":", 1)[1]), exposed)
        self.assertIn(int(listeners["health"].rsplit(":", 1)[1]), exposed)
        # deploy/k8s: same config path (its ConfigMap mount replaces the
        # default), same image version as the binary, its commands exist.
        version = subprocess.run([BINARIES["sluice"], "--version"], check=True,
                                 capture_output=True, text=True).stdout.split()[-1]
        for d in lib.kustomizations():
            objs = lib.render(d)
            pod, c = lib.sluice_container(objs)
            self.assertIn(f"--config={config_path}", c["args"], d)
            self.assertNotIn("command", c, "the image's ENTRYPOINT starts sluice")
            for k in pod.get("initContainers", []) + pod["containers"]:
                self.assertTrue(k["image"].endswith(f"sluice:{version}"), (d, k["image"], version))
                for word in k.get("command", [])[:1]:
                    self.assertIn(os.path.relpath(word, BIN_DIR), BINARIES, (d, k["name"], word))
                    self.assertEqual(os.path.dirname(word), BIN_DIR)


if __name__ == "__main__":
    import harness
    harness.main()
