# The README's two commands are `make demo` and `make test`; both run the setup first (idempotent, a
# second or two once done), so either one works alone on a fresh machine.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all setup build test test-gpu demo clean-demo

all: build

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace

# The whole suite: formatting and lints first (they are not opinions), then unit tests, the
# cross-crate tests in tests/, and the Python oracles they call. The cross-crate tests run the four
# binaries, which `cargo test` alone does not build.
test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

# GPU-only tests are #[ignore]d with a reason naming this target; on a CUDA machine this runs them.
test-gpu: setup
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace -- --ignored gpu

# The main job end to end on the built-in default data; writes demo-out/ and prints the report's path.
demo: setup
	@bash scripts/demo.sh

clean-demo:
	rm -rf demo-out
