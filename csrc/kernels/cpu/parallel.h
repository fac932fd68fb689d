// Work splitting over all cores (OpenMP). Kernels release the GIL before calling these.
#pragma once
#include <algorithm>
#include <cstdint>
#if defined(PIO_HAVE_OPENMP)
#include <omp.h>
#endif

namespace pio::cpu {

inline int num_threads() {
#if defined(PIO_HAVE_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Calls fn(begin, end) on contiguous chunks of [0, n). Runs inline when the work is smaller
// than min_per_thread items per thread: waking the pool costs more than tiny ops take.
template <class Fn>
inline void parallel_for(int64_t n, int64_t min_per_thread, const Fn& fn) {
  if (n <= 0) return;
  int64_t max_threads = num_threads();
  int64_t threads = std::min<int64_t>(max_threads, std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread)));
  if (threads <= 1) {
    fn(int64_t(0), n);
    return;
  }
#if defined(PIO_HAVE_OPENMP)
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

}  // namespace pio::cpu
