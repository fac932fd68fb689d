// Vectorized float32 math for the gated activations: SiLU, exact (erf) GELU and tanh GELU.
// Every function is finite for finite inputs of any magnitude: vexp clamps its argument, so
// x / (1 + e^-x) never computes inf / inf, and NaN inputs stay NaN through the final x * ....
#pragma once
#include "vec.h"

namespace pio::cpu {

// Horner evaluation of c[0]*t^(n-1) + ... + c[n-1] with fused multiply-adds.
template <int n>
inline VecF horner(VecF t, const float (&c)[n]) {
  VecF p = VecF::broadcast(c[0]);
  for (int i = 1; i < n; ++i) p = fmadd(p, t, VecF::broadcast(c[i]));
  return p;
}

// x * sigmoid(x), written as x / (1 + e^-x): one division and no 1 - sigmoid cancellation.
inline VecF vsilu(VecF x) {
  return x / (VecF::broadcast(1.0f) + vexp(VecF::zero() - x));
}

// 1 + erf(z), i.e. erfc(-z), computed without cancellation for negative z.
// Method (coefficients fitted here by weighted least squares on Chebyshev nodes in float64):
//   |z| < 0.875:        erf(|z|) = |z| * P(z^2), P of degree 5 (fit error 4e-9);
//   0.875 <= |z| < 3.92: erfc(|z|) = exp(Q(|z|)), Q of degree 8 fitted to log(erfc)
//                        (relative fit error < 3e-7, so absolute error < 5e-8);
//   |z| >= 3.92:         erfc(|z|) < 3e-8 (half an ulp of 1) and is taken as 0.
// Max absolute error of erf measured in float32 over [-6, 6]: 9e-8 (about 1.5 ulp near 0.8).
inline VecF vone_plus_erf(VecF z) {
  static constexpr float kSmall[] = {-0.000607935479f, 0.00500606187f, -0.026771456f,
                                     0.112817861f,     -0.376124591f,  1.12837911f};
  static constexpr float kLogErfc[] = {-7.38220308e-07f, -1.11538002e-05f, 0.000377060118f,
                                       -0.00398540637f,  0.0247514695f,    -0.107822344f,
                                       -0.633696079f,    -1.12936556f,     0.000147224346f};
  const VecF one = VecF::broadcast(1.0f), two = VecF::broadcast(2.0f);
  const VecF split = VecF::broadcast(0.875f), cutoff = VecF::broadcast(3.92f);
  const VecF a = vabs(z);
  const VecF erf_small = a * horner(a * a, kSmall);                 // erf(|z|), |z| < split
  VecF erfc_large = vexp(horner(vmin(a, cutoff), kLogErfc));        // erfc(|z|), |z| >= split
  erfc_large = select_lt(a, cutoff, erfc_large, VecF::zero());
  const VecF neg = select_lt(a, split, one - erf_small, erfc_large);  // 1 - erf(|z|)
  const VecF pos = select_lt(a, split, one + erf_small, two - erfc_large);  // 1 + erf(|z|)
  return select_lt(z, VecF::zero(), neg, pos);
}

// Exact GELU: x/2 * (1 + erf(x / sqrt 2)).
inline VecF vgelu_erf(VecF x) {
  return VecF::broadcast(0.5f) * x * vone_plus_erf(x * VecF::broadcast(0.70710678118654752f));
}

// Tanh GELU: x/2 * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 x^3), using the identity
// (1 + tanh(u)) / 2 = sigmoid(2u): exact, and free of the cancellation 1 + tanh(u) has for u << 0.
inline VecF vgelu_tanh(VecF x) {
  const VecF k = VecF::broadcast(-2.0f * 0.79788456080286536f);  // -2 * sqrt(2/pi)
  const VecF u2 = k * fmadd(VecF::broadcast(0.044715f) * x, x * x, x);  // -2u
  return x / (VecF::broadcast(1.0f) + vexp(u2));
}

}  // namespace pio::cpu
