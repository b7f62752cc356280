#!/usr/bin/env bash
# Runs the Python test suite against an AddressSanitizer + UBSan build of arenagrad._core.
#
# The extension is built with -DARENAGRAD_SANITIZE=ON into build/asan-python and copied next to a
# copy of the package; python runs with -S so no installed (or editable) arenagrad shadows it,
# with site-packages on PYTHONPATH for the test dependencies, and the sanitizer runtimes preloaded
# because the interpreter itself is not instrumented. Extra arguments go to pytest. The RSS tests are
# left out: ASan's quarantine holds freed memory on purpose, so RSS measures ASan, not arenagrad; so is
# the RLIMIT_AS one, since ASan's shadow memory needs terabytes of address space.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build/asan-python"
stage="$build/stage"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DARENAGRAD_SANITIZE=ON \
      -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build" >/dev/null
rm -rf "$stage" && mkdir -p "$stage"
cp -r "$root/python/arenagrad" "$stage/"
cp "$build"/_core*.so "$stage/arenagrad/"

site="$(python3 -c 'import site; print(site.getsitepackages()[0])')"
cd "$root"
# allocator_may_return_null: impossible allocations raise MemoryError, as in a normal build.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
PYTHONPATH="$stage:$site" \
python3 -S -m pytest tests -q -p no:cacheprovider \
    --deselect tests/test_benchmarks_smoke.py \
    --deselect tests/test_project.py::test_core_passes_its_unit_tests_under_address_and_ub_sanitizers \
    --deselect tests/test_guarantees.py::test_soak_ten_thousand_training_steps_keep_rss_and_the_arena_flat \
    --deselect tests/test_guarantees.py::test_memory_is_given_back_after_a_large_graph_is_freed \
    --deselect tests/test_guarantees.py::test_out_of_memory_raises_memory_error_and_the_failed_op_records_nothing \
    -k "not examples and not cli" "$@"
