# Thin front for CMake.  `make test` and `make demo` do all set-up on a
# fresh Debian machine (as root).  See README.md.
JOBS ?= 2

.PHONY: all build test check-long demo demo-sim demo-https bench install clean format

all: build

build:
	scripts/deps.sh
	cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build build -j $(JOBS)

test:
	scripts/test.sh

check-long: build
	ctest --test-dir build -j $(JOBS) --output-on-failure -L long

# demo: the Linux daemon intercepting real traffic in namespaces, then an
# HTTPS page fetched through the TLS-intercepting example (badge inserted,
# the exported CA trusted).
demo: build
	scripts/demo-linux.sh
	tests/example/demo.sh

demo-sim: build
	scripts/demo.sh

demo-https: build
	tests/example/demo.sh

bench: build
	bench/run.sh

install: build
	cmake --install build --prefix $(or $(PREFIX),/usr/local)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-tsan
