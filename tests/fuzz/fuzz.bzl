"""sluice_fuzzer: one fuzz target built two ways.

  <name>_replay_test  cc_test (any compiler, part of `bazel test //...` and
                      of --config=asan): replays the seed corpus plus
                      fixed-seed mutations through replay_main.cc.
  <name>              cc_binary, tagged manual: the libFuzzer binary. Build
                      it only with --config=fuzz (clang 14, its own output
                      base): scripts/fuzz.sh does that.
"""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_library", "cc_test")

def sluice_fuzzer(name, srcs, deps, corpus, replay_random = 2000, data = []):
    cc_library(
        name = name + "_lib",
        testonly = True,
        srcs = srcs + ["fuzz_input.h"],
        deps = deps,
        alwayslink = True,
    )
    cc_test(
        name = name + "_replay_test",
        size = "small",
        srcs = ["replay_main.cc"],
        args = ["$(locations %s)" % c for c in corpus] + ["--random=%d" % replay_random],
        data = corpus + data,
        deps = [":" + name + "_lib"],
    )
    cc_binary(
        name = name,
        testonly = True,
        linkopts = ["-fsanitize=fuzzer"],
        tags = ["manual"],
        deps = [":" + name + "_lib"],
    )
