// Threads for batched replay, started once and kept for the life of the process: starting and joining
// a thread costs tens of microseconds, as much as a small batch's whole pass, and a training step calls
// the pool twice (forward, then backward) with a little Python in between.
#pragma once

#include <cstddef>
#include <functional>

namespace arenagrad {

// Runs job(0), job(1), ..., job(n - 1) at the same time, job(0) on the calling thread, and returns when
// all have returned. The jobs must pull their work from a shared counter (so that any of them can do all
// of it) and must not throw: job(1..n-1) may not run at all, when the pool is busy with another caller
// or the system has no thread to give, and job(0) then does the work alone.
void run_on_workers(std::size_t n, const std::function<void(std::size_t)>& job);

// How many threads batched replay may use: ARENAGRAD_NUM_THREADS if set (at least 1), else the
// machine's cores.
std::size_t num_threads();

}  // namespace arenagrad
