// Work splitting over all cores (OpenMP). Kernels release the GIL before calling these.
//
// Two ways a kernel runs:
// - alone (a call from Python): parallel_for opens an OpenMP region for that call, or runs inline
//   when the work is small;
// - in a team (run_in_team, the fused decode step): one OpenMP region spans a whole decode step
//   of ~200 kernel calls, so the pool is woken once instead of once per kernel. Inside it each
//   kernel is called either
//     * by every thread of the team together (team_collective): parallel_for then splits
//       [0, n) statically over the team and ends with a barrier, and team_shared hands every
//       thread thread 0's buffer; the code around parallel_for runs on every thread (it must be
//       the same on all of them: each thread reaches each barrier the same number of times);
//     * or by one thread on its own slice of the work (team_private): parallel_for runs inline
//       and num_threads() is 1.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#if defined(PIO_HAVE_OPENMP)
#include <omp.h>
#endif

namespace pio::cpu {

// One OpenMP region's threads, shared by them. A kernel that throws in a team records the error
// here and keeps reaching the barriers (an exception may not leave an OpenMP region); run_in_team
// rethrows the first one once the region has ended.
class Team {
 public:
  explicit Team(int size) : size_(size) {}
  int size() const { return size_; }
  void set_size(int size) { size_ = size; }

  void barrier() {
#if defined(PIO_HAVE_OPENMP)
    if (size_ > 1) {
      if (omp_get_thread_num() == 0) ++barriers_;
#pragma omp barrier
    }
#endif
  }
  // Barriers the team has passed (counted with more than one thread): its synchronisation count.
  int64_t barriers() const { return barriers_; }

  // Every thread gets thread `0`'s `mine` (all threads must call it, with the same type).
  template <class T>
  T* shared(T* mine, int rank) {
    if (size_ == 1) return mine;
    if (rank == 0) slot_ = mine;
    barrier();
    T* result = static_cast<T*>(slot_);
    barrier();  // nobody overwrites the slot before everyone has read it
    return result;
  }

  // Records the current exception (the first one wins).
  void fail() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = std::current_exception();
    failed_.store(true);
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  int size_;
  int64_t barriers_ = 0;
  void* slot_ = nullptr;
  std::mutex mutex_;
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

// The calling thread's place in a team, if it runs in one.
struct TeamMember {
  Team* team = nullptr;
  int rank = 0;
  bool collective = false;  // inside a collective call
};
inline TeamMember& team_member() {
  static thread_local TeamMember member;
  return member;
}

inline int num_threads() {
  const TeamMember& me = team_member();
  if (me.team) return me.collective ? me.team->size() : 1;
#if defined(PIO_HAVE_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// In a collective call: thread 0's `mine`, for scratch every thread writes a part of and reads whole.
// Anywhere else: `mine`.
template <class T>
T* team_shared(T* mine) {
  const TeamMember& me = team_member();
  return me.team && me.collective ? me.team->shared(mine, me.rank) : mine;
}

// OpenMP regions parallel_for has opened (what a benchmark counts per decode step).
inline std::atomic<int64_t>& regions_opened() {
  static std::atomic<int64_t> count{0};
  return count;
}

// Calls fn(begin, end) on contiguous chunks of [0, n). Runs inline when the work is smaller
// than min_per_thread items per thread: waking the pool costs more than tiny ops take.
template <class Fn>
inline void parallel_for(int64_t n, int64_t min_per_thread, const Fn& fn) {
  TeamMember& me = team_member();
  if (me.team && me.collective) {
    // Static split over the team; threads without a chunk go straight to the barrier. Inside its
    // chunk a thread is on its own (kernels fn calls run inline).
    if (n > 0) {
      const int64_t threads = std::min<int64_t>(me.team->size(), std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread)));
      const int64_t chunk = (n + threads - 1) / threads;
      const int64_t b = me.rank * chunk, e = std::min(n, b + chunk);
      if (b < e) {
        me.collective = false;
        try {
          fn(b, e);
        } catch (...) {
          me.team->fail();
        }
        me.collective = true;
      }
    }
    me.team->barrier();
    return;
  }
  if (n <= 0) return;
  int64_t max_threads = num_threads();
  int64_t threads = std::min<int64_t>(max_threads, std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread)));
  if (threads <= 1) {
    fn(int64_t(0), n);
    return;
  }
#if defined(PIO_HAVE_OPENMP)
  regions_opened().fetch_add(1, std::memory_order_relaxed);
#pragma omp parallel num_threads(int(threads))
  {
    int64_t t = omp_get_thread_num();
    int64_t nt = omp_get_num_threads();
    int64_t chunk = (n + nt - 1) / nt;
    int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) fn(b, e);
  }
#else
  fn(int64_t(0), n);
#endif
}

// A team's work is a sequence of these calls, made by every member in the same order, with
// Team::barrier() between a private call and whatever reads what it wrote. An exception is recorded
// for run_in_team to rethrow; it never leaves the call.
//
// team_collective: fn's kernel calls are made by every member together (their parallel_for split
// over the team, ending in a barrier). Always runs, even after a failure, so every member reaches
// the same barriers (kernels check their inputs alike on every member, so they fail alike).
template <class Fn>
void team_collective(const Fn& fn) {
  TeamMember& me = team_member();
  const bool previous = me.collective;
  me.collective = me.team != nullptr;
  try {
    fn();
  } catch (...) {
    me.collective = previous;
    if (!me.team) throw;
    me.team->fail();
    return;
  }
  me.collective = previous;
}

// team_private: fn's kernel calls run on the calling member alone (its own slice of the work);
// skipped once any member failed, as nothing private waits at a barrier.
template <class Fn>
void team_private(const Fn& fn) {
  TeamMember& me = team_member();
  if (me.team && me.team->failed()) return;
  try {
    fn();
  } catch (...) {
    if (!me.team) throw;
    me.team->fail();
  }
}

// Runs body(team, rank) on up to `threads` threads in one OpenMP region (inline for one), each
// registered as a team member. body does its work through team_collective / team_private calls
// (an exception leaving body itself would end the process); run_in_team rethrows the first error
// recorded, else returns the number of barriers the team passed. Not reentrant from inside a team.
template <class Body>
int64_t run_in_team(int threads, const Body& body) {
  Team team(1);
  auto member = [&](int rank) {
    TeamMember& me = team_member();
    me = TeamMember{&team, rank, false};
    body(team, rank);
    me = TeamMember{};
  };
#if defined(PIO_HAVE_OPENMP)
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
#pragma omp single
      team.set_size(omp_get_num_threads());  // the runtime may give fewer threads than asked
      member(omp_get_thread_num());
    }
    team.rethrow();
    return team.barriers();
  }
#endif
  member(0);
  team.rethrow();
  return team.barriers();
}

}  // namespace pio::cpu
