# Front door. `make run` and `make test` do all set-up on a fresh Debian machine.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test unit bench bench-readme soak fuzz clean
all: build

deps:
	@scripts/setup-deps.sh

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/bin/cetcd --name default --data-dir ./default.cetcd \
	  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379

test: CMAKE_FLAGS += -DCETCD_WERROR=ON
test: build
	cd $(BUILD) && ctest --output-on-failure -j 2

unit: build
	cd $(BUILD) && ctest --output-on-failure -R '^unit\.'

# Long runs, not part of `make test`.
soak: build
	$(BUILD)/bin/raft-sim --seeds $${SEEDS:-200000}

# The standard comparison, cetcd against etcd 3.4 on this machine
# (cetcd-bench compare, fresh servers per run, A B alternating): writes
# $(BUILD)/bench/report.md, report.svg and results.jsonl.
ROUNDS ?= 3
bench: build
	$(BUILD)/bin/cetcd-bench compare --a-cmd etcd --b-cmd $(BUILD)/bin/cetcd --standard \
	  --rounds $(ROUNDS) --out $(BUILD)/bench

# Copies that report into README.md (between the bench markers) and its chart
# into docs/bench/: the README's performance section is the tool's output.
bench-readme:
	scripts/bench-readme.sh $(BUILD)/bench

# Every libFuzzer harness (clang), FUZZ_SECONDS each, on a scratch copy of its
# seed corpus (tests/fuzz/corpus/<name>) so the repository is not written to.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 1; }
	@CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCETCD_FUZZ=ON >/dev/null
	@set -e; for f in tests/fuzz/fuzz_*.c; do \
	  n=$$(basename $$f .c); c=$${n#fuzz_}; \
	  cmake --build build-fuzz -j $(JOBS) --target $$n >/dev/null; \
	  rm -rf build-fuzz/corpus-$$c && mkdir -p build-fuzz/corpus-$$c; \
	  [ -d tests/fuzz/corpus/$$c ] && cp -r tests/fuzz/corpus/$$c/. build-fuzz/corpus-$$c/ || true; \
	  echo "fuzz: $$n for $(FUZZ_SECONDS)s"; \
	  build-fuzz/bin/$$n -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus-$$c 2>&1 | grep -E "^Done|ERROR|SUMMARY"; \
	done

clean:
	rm -rf $(BUILD) build-fuzz
