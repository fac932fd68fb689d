// Scalar 16-bit float storage types and their conversions to and from float32.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace pio::cpu {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(Half h) { return _cvtsh_ss(h.bits); }
inline float to_float(BFloat16 b) {
  uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T> inline T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline Half from_float<Half>(float x) { return Half{_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT)}; }
template <> inline BFloat16 from_float<BFloat16>(float x) {
  if (std::isnan(x)) return BFloat16{0x7fc0};
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return BFloat16{uint16_t(u >> 16)};
}

}  // namespace pio::cpu
