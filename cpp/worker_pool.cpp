#include "worker_pool.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <unistd.h>
#endif

namespace arenagrad {

namespace {

class Pool {
  public:
    void run(std::size_t n, const std::function<void(std::size_t)>& job) {
        std::unique_lock<std::mutex> turn(turn_, std::try_to_lock);  // one caller at a time; others go alone
        if (!turn.owns_lock()) return job(0);
        {
            const std::lock_guard<std::mutex> hold(lock_);
            while (threads_.size() < n - 1) {
                const std::size_t index = threads_.size() + 1;
                const std::uint64_t seen = generation_.load();  // it must take the job announced below
                try {
                    threads_.emplace_back([this, index, seen] { serve(index, seen); });
                } catch (const std::system_error&) {
                    break;
                }
            }
            job_ = &job;
            helpers_ = std::min(n - 1, threads_.size());
            pending_ = helpers_;
            generation_.fetch_add(1);
        }
        wake_.notify_all();
        job(0);
        std::unique_lock<std::mutex> hold(lock_);
        done_.wait(hold, [&] { return pending_ == 0; });
        job_ = nullptr;
    }

  private:
    // Helper `index` (1, 2, ...): takes part in every job that wants that many helpers. Between jobs it
    // spins for a short while before sleeping, so that the next call of a step finds it awake.
    void serve(std::size_t index, std::uint64_t seen) {
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
            while (generation_.load() == seen && std::chrono::steady_clock::now() < until) {
                std::this_thread::yield();
            }
            std::unique_lock<std::mutex> hold(lock_);
            wake_.wait(hold, [&] { return generation_.load() != seen; });
            seen = generation_.load();
            if (index > helpers_) continue;  // this job wants fewer helpers
            const std::function<void(std::size_t)>* job = job_;
            hold.unlock();
            (*job)(index);
            hold.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }

    std::mutex turn_;
    std::mutex lock_;  // guards everything below but generation_, which is also read while spinning
    std::condition_variable wake_;
    std::condition_variable done_;
    std::vector<std::thread> threads_;  // never joined: the pool lives as long as the process
    const std::function<void(std::size_t)>* job_ = nullptr;
    std::size_t helpers_ = 0;
    std::size_t pending_ = 0;
    std::atomic<std::uint64_t> generation_{0};
};

// The process's pool. A fork's child has none of its parent's threads (and perhaps a lock some parent
// thread held), so a new process gets a new pool; the parent's copy is left behind, unused.
Pool& pool() {
    static std::mutex guard;
    static Pool* current = nullptr;
#if defined(_WIN32)
    const long owner_now = 0;
#else
    const long owner_now = static_cast<long>(getpid());
#endif
    static long owner = owner_now;
    const std::lock_guard<std::mutex> hold(guard);
    if (current == nullptr || owner != owner_now) {
        current = new Pool();  // never deleted: its threads may outlive static destructors
        owner = owner_now;
    }
    return *current;
}

}  // namespace

void run_on_workers(std::size_t n, const std::function<void(std::size_t)>& job) {
    if (n <= 1) return job(0);
    pool().run(n, job);
}

// How many threads batched replay may use: ARENAGRAD_NUM_THREADS if set (at least 1), else the
// cores of the machine. Decided once: asking the system costs more than a small batch's replay.
std::size_t num_threads() {
    static const std::size_t threads = [] {
        if (const char* text = std::getenv("ARENAGRAD_NUM_THREADS")) {
            char* end = nullptr;
            const unsigned long n = std::strtoul(text, &end, 10);
            if (end != text && *end == '\0' && n >= 1) return std::min<std::size_t>(n, 256);
        }
        return std::size_t{std::max(1u, std::thread::hardware_concurrency())};
    }();
    return threads;
}

}  // namespace arenagrad
