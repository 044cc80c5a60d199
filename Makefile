# Sluice. The two commands a new user needs:
#   make run    build, start the demo upstream and Sluice in front of it
#   make test   run every test; ends with "N passed, N failed"
.PHONY: deps build run test bench format clean

deps:
	@scripts/install-deps

build: deps
	bazel build -c opt //server:sluice //server/demo:demo_upstream

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
