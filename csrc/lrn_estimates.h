// d^-3/4 from reciprocal square root estimates: the CPU LRN kernels' float path for the
// network's beta = 0.75, forward and backward.
#pragma once

#include "lrn_relu_concat.h"

#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace googlenet_fused {

// Whether a float kernel may take d^-3/4 from the estimates: beta = 0.75, the network's, and
// every denominator d = k + alpha/size * (sum of squares) at least k, a normal float (or +inf,
// or NaN).
inline bool estimates_apply(const LrnParams& p) {
  return p.beta == 0.75 && p.alpha >= 0 && p.k >= std::numeric_limits<float>::min();
}

#if defined(__AVX512F__)
// x^-1/2 of 16 floats: the 14-bit estimate and one Newton step.
inline __m512 rsqrt_newton(__m512 x) {
  const __m512 y = _mm512_rsqrt14_ps(x);
  const __m512 half_x_yy = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)),
                                         _mm512_mul_ps(y, y));
  return _mm512_mul_ps(y, _mm512_sub_ps(_mm512_set1_ps(1.5f), half_x_yy));
}

// s = d^-3/4 and inv_d = 1/d of 16 denominators (estimates_apply's), as s = t^2 u and
// inv_d = t^2 with t = d^-1/2 and u = t^-1/2: multiplies and adds. The exact form's square
// roots and division all queue on the FP divider, which bounded both kernels (4a's branches,
// channels_last, 2 cores: forward 0.62-0.65 ms exact, 0.44-0.51 ms estimated); s within 3 ulp
// (ATen's fp32 LRN: 2). d = +inf gives 0 for both, as the exact forms do; NaN stays NaN.
inline void pow_neg075(__m512 d, __m512& s, __m512& inv_d) {
  const __m512 t = rsqrt_newton(d);  // NaN for d = +inf (the Newton step's inf * 0)
  const __m512 tt = _mm512_mul_ps(t, t);
  const __mmask16 infinite =
      _mm512_cmp_ps_mask(d, _mm512_set1_ps(std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
  inv_d = _mm512_mask_blend_ps(infinite, tt, _mm512_setzero_ps());
  s = _mm512_mask_blend_ps(infinite, _mm512_mul_ps(tt, rsqrt_newton(t)), _mm512_setzero_ps());
}
#endif

}  // namespace googlenet_fused
