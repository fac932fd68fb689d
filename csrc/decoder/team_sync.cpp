// What one thread team per decode step saves: the cost of a barrier inside a team against an
// OpenMP region opened per kernel (benchmarks/engine/bench_decode_step.py reports both).
#include <atomic>
#include <chrono>
#include <utility>

#include "kernels/cpu/dispatch.h"
#include "kernels/cpu/parallel.h"
#include "pio/pybind_tensor_view.h"

namespace pio::cpu {
namespace {

// (seconds per team barrier, seconds per empty parallel region) on `threads` threads.
std::pair<double, double> measure_team_sync(int threads, int64_t rounds) {
  PIO_CHECK(threads >= 1 && rounds >= 1, "threads and rounds must be >= 1, got ", threads, " and ", rounds);
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  run_in_team(threads, [&](Team& team, int) { team.barrier(); });  // the pool started
  const auto t0 = Clock::now();
  run_in_team(threads, [&](Team& team, int) {
    for (int64_t i = 0; i < rounds; ++i) team.barrier();
  });
  const auto t1 = Clock::now();
  std::atomic<int64_t> sink{0};
  for (int64_t i = 0; i < rounds; ++i) {
#if defined(PIO_HAVE_OPENMP)
#pragma omp parallel num_threads(threads)
#endif
    sink.fetch_add(1, std::memory_order_relaxed);
  }
  const auto t2 = Clock::now();
  return {seconds(t0, t1) / double(rounds), seconds(t1, t2) / double(rounds)};
}

}  // namespace
}  // namespace pio::cpu

PIO_CPU_BINDINGS(team_sync) {
  namespace py = pybind11;
  using namespace pio::cpu;
  m.def("regions_opened", [] { return regions_opened().load(); },
        "OpenMP regions the kernels' parallel_for has opened so far (a fused step's team counts as none)");
  m.def("team_sync_cost", &measure_team_sync, py::arg("threads"), py::arg("rounds"), PIO_NOGIL,
        "(seconds per barrier inside one OpenMP team, seconds per OpenMP region opened and joined) on "
        "`threads` threads, each the mean over `rounds`: what a fused step pays per barrier, and what "
        "each kernel call pays when it opens its own region");
}
