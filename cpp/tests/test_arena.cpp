// Unit tests of the core alone, with no Python: built with -DARENAGRAD_BUILD_TESTS=ON, and meant
// to be run under -DARENAGRAD_SANITIZE=ON, where AddressSanitizer and UBSan check every access.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "arena.hpp"
#include "optimizer.hpp"
#include "tape.hpp"
#include "worker_pool.hpp"

using arenagrad::Arena;
using arenagrad::NodeId;
using arenagrad::Op;
using arenagrad::Status;

namespace {

int failures = 0;

void check(bool ok, const char* what, int line) {
    if (!ok) {
        std::fprintf(stderr, "FAILED line %d: %s\n", line, what);
        ++failures;
    }
}
#define CHECK(cond) check((cond), #cond, __LINE__)

NodeId apply(Arena& arena, Op op, NodeId a, NodeId b = 0) {
    NodeId out = 0;
    const Status s = arena.apply(op, a, b, &out);
    CHECK(s == Status::Ok);
    return out;
}

void test_neuron_gradients() {
    Arena arena;
    const NodeId x1 = arena.leaf(2.0), x2 = arena.leaf(0.0), w1 = arena.leaf(-3.0), w2 = arena.leaf(1.0);
    const NodeId b = arena.leaf(6.8813735870195432);
    const NodeId ws[] = {w1, w2};
    const NodeId xs[] = {x1, x2};
    const NodeId n = apply(arena, Op::Add, arena.dot(ws, xs, 2), b);
    const NodeId o = apply(arena, Op::Tanh, n);
    arena.backward(o);
    CHECK(std::fabs(arena.value(o) - 0.7071067811865476) < 1e-12);
    CHECK(std::fabs(arena.grad(x1) - (-1.5)) < 1e-12);
    CHECK(std::fabs(arena.grad(w1) - 1.0) < 1e-12);
    CHECK(std::fabs(arena.grad(x2) - 0.5) < 1e-12);
    CHECK(arena.grad(w2) == 0.0);
}

void test_errors_create_nothing() {
    Arena arena;
    const NodeId zero = arena.leaf(0.0), one = arena.leaf(1.0), neg = arena.leaf(-1.0);
    const auto live = arena.stats().live;
    NodeId out = 0;
    CHECK(arena.apply(Op::Div, one, zero, &out) == Status::ZeroDivision);
    CHECK(arena.apply(Op::Log, neg, 0, &out) == Status::Domain);
    CHECK(arena.apply(Op::Sqrt, neg, 0, &out) == Status::Domain);
    const NodeId big = arena.leaf(1000.0);
    CHECK(arena.apply(Op::Exp, big, 0, &out) == Status::Overflow);
    CHECK(arena.stats().live == live + 1);
    CHECK(arena.refcount(one) == 1 && arena.refcount(neg) == 1);
}

void test_deep_chain_frees_iteratively_and_slots_are_reused() {
    Arena arena;
    const NodeId start = arena.leaf(1.0);
    const NodeId k = arena.leaf(1.0000001);
    NodeId x = start;
    arena.retain(x);
    for (int i = 0; i < 2'000'000; ++i) {
        const NodeId next = apply(arena, Op::Mul, x, k);
        arena.release(x);  // the chain keeps x alive through `next`
        x = next;
    }
    arena.backward(x);
    CHECK(std::fabs(arena.grad(start) - std::pow(1.0000001, 2'000'000)) < 1e-6);
    const auto bytes = arena.stats().bytes;
    arena.release(x);
    CHECK(arena.stats().live == 2);  // start and k, still owned by this test
    // The freed chain's memory is given back: the arrays shrink to the live slots.
    CHECK(arena.stats().capacity <= 64);
    CHECK(arena.stats().bytes < bytes / 100);
    const auto capacity = arena.stats().capacity;
    for (int i = 0; i < 1000; ++i) arena.release(apply(arena, Op::Neg, k));
    CHECK(arena.stats().capacity <= capacity + 1);  // freed slots are reused
}

// (a * b) + (a * c) + ... built as one expression: the leaf grads must not depend on which
// slots earlier work left free, so build it on a fresh arena and after scattered frees.
std::vector<double> build_and_differentiate(Arena& arena, const std::vector<NodeId>& junk_to_free) {
    const NodeId a = arena.leaf(0.1), b = arena.leaf(0.7), c = arena.leaf(-0.3);
    const NodeId ab = apply(arena, Op::Mul, a, b);
    for (std::size_t i = 0; i < junk_to_free.size(); i += 2) arena.release(junk_to_free[i]);  // holes below
    const NodeId ac = apply(arena, Op::Mul, a, c);
    const NodeId t = apply(arena, Op::Tanh, ab);
    const NodeId s1 = apply(arena, Op::Add, t, ac);
    const NodeId s2 = apply(arena, Op::Mul, s1, ab);
    const NodeId root = apply(arena, Op::Add, s2, apply(arena, Op::Mul, ac, a));
    arena.backward(root);
    std::vector<double> grads = {arena.grad(a), arena.grad(b), arena.grad(c), arena.value(root)};
    return grads;
}

void test_summation_order_ignores_arena_history() {
    Arena fresh;
    const std::vector<double> expected = build_and_differentiate(fresh, {});
    for (int holes : {1, 3, 8, 64}) {
        Arena arena;
        std::vector<NodeId> junk;
        const NodeId one = arena.leaf(1.0);
        for (int i = 0; i < holes; ++i) junk.push_back(apply(arena, Op::Neg, one));
        const std::vector<double> got = build_and_differentiate(arena, junk);
        CHECK(got == expected);
        CHECK(arena.stats().sweeps_dfs == 1);  // the holes split the graph across runs
    }
}

// Run numbers are renumbered before they wrap; graphs spanning runs still sum in creation order.
void test_run_numbers_renumber_before_wrapping() {
    Arena fresh;
    const std::vector<double> expected = build_and_differentiate(fresh, {});
    Arena arena;
    arena.set_next_run_for_testing(0xFFFFFFFFu - 3);
    const NodeId one = arena.leaf(1.0);
    for (int round = 0; round < 12; ++round) {
        std::vector<NodeId> junk;
        for (int i = 0; i < 6; ++i) junk.push_back(apply(arena, Op::Neg, one));
        CHECK(build_and_differentiate(arena, junk) == expected);
        for (std::size_t i = 1; i < junk.size(); i += 2) arena.release(junk[i]);
    }
}

void test_logsumexp_is_stable_and_replays() {
    Arena arena;
    const NodeId big = arena.leaf(800.0), small = arena.leaf(-5.0);
    const NodeId ids[] = {big, small};
    const NodeId lse = arena.nary(Op::LogSumExp, ids, 2);
    CHECK(std::isfinite(arena.value(lse)) && std::fabs(arena.value(lse) - 800.0) < 1e-12);
    arena.backward(lse);
    CHECK(arena.grad(big) == 1.0 && arena.grad(small) >= 0.0 && arena.grad(small) < 1e-300);
    const NodeId inf = arena.leaf(INFINITY), nan = arena.leaf(NAN);
    const NodeId with_inf[] = {inf, small};
    const NodeId with_nan[] = {inf, nan};
    CHECK(arena.value(arena.nary(Op::LogSumExp, with_inf, 2)) == INFINITY);
    CHECK(std::isnan(arena.value(arena.nary(Op::LogSumExp, with_nan, 2))));
}

void test_pool_stays_bounded() {
    Arena arena;
    std::vector<NodeId> xs;
    for (int i = 0; i < 100; ++i) xs.push_back(arena.leaf(i));
    std::size_t pool_capacity = 0;
    for (int round = 0; round < 1000; ++round) {
        arena.release(arena.dot(xs.data(), xs.data(), xs.size()));
        arena.release(arena.sum(xs.data(), xs.size()));
        if (round == 100) pool_capacity = arena.stats().pool_capacity;
    }
    CHECK(arena.stats().pool_capacity == pool_capacity);
    for (const NodeId x : xs) CHECK(arena.refcount(x) == 1);
}

void test_tape_replays_scalar_and_batched() {
    Arena arena;
    const NodeId x = arena.leaf(1.0), w = arena.leaf(0.5), k = arena.leaf(2.0);
    const NodeId pw = apply(arena, Op::PowConst, x, k);               // x ** 2
    const NodeId ws[] = {w, x};
    const NodeId xs[] = {pw, w};
    const NodeId d = arena.dot(ws, xs, 2);                             // w*x^2 + x*w
    const NodeId root = apply(arena, Op::Relu, apply(arena, Op::Sub, d, k));
    arenagrad::Tape tape(arena, root, {x});
    arenagrad::ReplayError error;
    const double samples[] = {3.0, -1.0, 0.5, 4.0};
    double out[4];
    CHECK(tape.forward_batch(samples, 4, out, error));
    bool threw = false;
    try {
        tape.forward_batch(samples, 0, out, error);  // the core checks its own preconditions
    } catch (const std::invalid_argument&) {
        threw = true;
    }
    CHECK(threw);
    tape.backward_batch(nullptr, out);  // input grads reuse `out`
    for (int i = 0; i < 4; ++i) {
        CHECK(tape.forward(&samples[i], error));
        const double v = samples[i];
        const double expected = std::max(0.0, 0.5 * v * v + 0.5 * v - 2.0);
        CHECK(std::fabs(arena.value(root) - expected) < 1e-12);
    }
    arena.release(root);  // the tape still owns the graph
    CHECK(tape.forward(&samples[0], error));
    const double bad = -1.0;
    const NodeId lg = apply(arena, Op::Log, x);
    {
        arenagrad::Tape log_tape(arena, lg, {x});
        CHECK(!log_tape.forward(&bad, error) && error.status == Status::Domain);
    }
    arena.release(lg);
}

void test_param_group_sgd() {
    Arena arena;
    const NodeId p = arena.leaf(1.0);
    arena.set_grad(p, 2.0);
    {
        arenagrad::ParamGroup group(arena, {p});
        group.sgd_step(0.1, 0.9, 0.0, 0.0, false);
        group.sgd_step(0.1, 0.9, 0.0, 0.0, false);
        CHECK(std::fabs(arena.value(p) - (1.0 - 0.2 - 0.1 * (0.9 * 2.0 + 2.0))) < 1e-15);
        group.adam_step(0.01, 0.9, 0.999, 1e-8, 0.0);
        CHECK(group.adam_steps() == 1);
    }
    CHECK(arena.refcount(p) == 1);
}

// Every item is done exactly once, whoever runs it: with more workers than cores, with two callers at
// once (one of them then works alone), and with jobs of different sizes one after another.
void test_worker_pool_does_all_the_work() {
    const auto run = [](std::size_t workers, std::size_t items) {
        std::vector<std::atomic<int>> done(items);
        std::atomic<std::size_t> next{0};
        arenagrad::run_on_workers(workers, [&](std::size_t) {
            for (std::size_t i = next++; i < items; i = next++) ++done[i];
        });
        return std::all_of(done.begin(), done.end(), [](const std::atomic<int>& d) { return d == 1; });
    };
    bool ok = true;
    for (std::size_t workers : {1, 2, 5, 3, 1, 8}) ok = ok && run(workers, 1000);
    std::atomic<bool> both{true};
    std::thread other([&] {
        for (int k = 0; k < 200; ++k) both = both && run(3, 257);
    });
    for (int k = 0; k < 200; ++k) ok = ok && run(2, 311);
    other.join();
    CHECK(ok);
    CHECK(both);
}

}  // namespace

int main() {
    test_neuron_gradients();
    test_errors_create_nothing();
    test_deep_chain_frees_iteratively_and_slots_are_reused();
    test_pool_stays_bounded();
    test_summation_order_ignores_arena_history();
    test_run_numbers_renumber_before_wrapping();
    test_logsumexp_is_stable_and_replays();
    test_tape_replays_scalar_and_batched();
    test_param_group_sgd();
    test_worker_pool_does_all_the_work();
    if (failures != 0) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return EXIT_FAILURE;
    }
    std::printf("core tests: all passed\n");
    return EXIT_SUCCESS;
}
