# Sluice. The two commands a new user needs:
#   make run    build, start the demo upstream and Sluice in front of it
#   make test   run every test; ends with "N passed, N failed, N skipped"
# and, for the admin CLI and the load generator:
#   make tools  build sluicectl and sluice-bench (what `make build` builds)
.PHONY: deps build tools run test bench format clean

# Every binary the README names, in one optimized (-c opt) build: a
# `bazel build` with other options repoints bazel-bin/ to its own output,
# and the paths of the binaries it did not build vanish from it.
BINARIES = //server:sluice //server/demo:demo_upstream \
	//client/sluicectl:sluicectl //client/bench:sluice-bench

deps:
	@scripts/install-deps

build: deps
	bazel build -c opt $(BINARIES)

# bazel-bin/client/sluicectl/sluicectl, bazel-bin/client/bench/sluice-bench
# (and bazel-bin/server/sluice stays): the same build as `make build`.
tools: build

run: build
	@scripts/run-demo.sh

test: deps
	@scripts/test.sh

bench: deps
	@bench/run.sh

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	bazel clean
