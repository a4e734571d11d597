# Front door. `make run` and `make test` do all set-up on a fresh Debian machine.
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build run test unit bench soak clean
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

bench: build
	scripts/bench.sh

clean:
	rm -rf $(BUILD)
