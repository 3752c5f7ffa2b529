#!/bin/sh
# test.sh - what `make test` runs: deps, then three builds and their tests.
#   build/        release-with-debug-info, every test but the long ones
#   build-asan/   clang ASan+UBSan (+ libFuzzer targets, run for a bounded time)
#   build-tsan/   clang TSan, the concurrency tests (label "tsan")
# Long soak/stress runs are `make check-long` (label "long").
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh
JOBS=${JOBS:-2}

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$JOBS"
ctest --test-dir build -j "$JOBS" --output-on-failure -LE 'long|fuzz'

cmake -S . -B build-asan -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug -DNECTAR_SANITIZE=address,undefined \
    -DNECTAR_FUZZ=ON >/dev/null
cmake --build build-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan -j "$JOBS" \
    --output-on-failure -LE 'long|netns|bench'

cmake -S . -B build-tsan -G Ninja -DCMAKE_C_COMPILER=clang \
    -DCMAKE_BUILD_TYPE=Debug -DNECTAR_SANITIZE=thread >/dev/null
cmake --build build-tsan -j "$JOBS"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan -j "$JOBS" \
    --output-on-failure -L tsan
echo "make test: all suites passed"
