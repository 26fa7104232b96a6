// lrn_relu_concat_backward: the gradient of every branch of lrn_relu_concat in one pass.
//
// With a = branch (+ bias), d_c = k + alpha/size * sum_{j in W(c)} a_j^2, s_c = d_c^-beta,
// y_c = a_c s_c and g = dL/dy (masked by y > 0 with the ReLU):
//   dL/da_i = g_i s_i - (2 alpha beta / size) a_i sum_{c : i in W(c)} g_c a_c s_c / d_c
// W(c) = [c - size/2, c + (size-1)/2] inside the branch, so {c : i in W(c)} is
// [i - (size-1)/2, i + size/2]. Only the branch inputs are saved: the window sums and the
// output's sign are recomputed here (cheap next to a second pass over memory, and nothing of
// the size of the output is kept for the backward).
//
// CPU, two layouts as in the forward. Channels-last: a task is one pixel of one image; each
// branch's channels are contiguous there and the window sums are unrolled shifts over them.
// Planar (NCHW and its slices): a task is one branch at a block of kPixels pixels of one image,
// the arithmetic vectorized over the contiguous pixels. Inputs in neither layout are copied
// once into the branches' layout.
#include "lrn_relu_concat.h"
#include "layout.h"
#include "lrn_estimates.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace googlenet_fused {
namespace {


struct Consts {
  double k, alpha_over_size, beta, coef;  // coef = 2 alpha beta / size
  bool relu;
  bool estimated;  // estimates_apply: float pixels may take s and s / d from the estimates
};

// s = d^-beta and s / d. With beta = 0.75: one division, 1 / sqrt(d), then d^-1/4 its square
// root, s = d^-1/2 d^-1/4 and s / d = s (d^-1/2)^2. The FP divider, which runs both square
// roots and divisions, bounds this kernel: with two of each per value the backward of 4a's
// branches took 1.20 ms, with one division 1.00 ms (2 cores). Exact IEEE operations, no
// overflow: d = +inf gives 0 and d = 0 gives inf, as d^-0.75 does.
template <typename acc_t, bool kBeta075>
inline void pow_neg_beta(acc_t d, acc_t beta, acc_t& s, acc_t& s_over_d) {
  if constexpr (kBeta075) {
    const acc_t inv_r = acc_t(1) / std::sqrt(d);
    s = inv_r * std::sqrt(inv_r);
    s_over_d = s * inv_r * inv_r;
  } else {
    s = std::pow(d, -beta);
    s_over_d = s / d;
  }
}

#if defined(__AVX512F__)
// backward_pixel's three passes for float, 16 channels at a time, s = d^-3/4 and s / d = s (1/d)
// from the estimates (pow_neg075) instead of a division and two square roots per value. 4a's
// four branches at batch 16, 2 cores, medians of runs side by side: 1.36 -> 1.25 ms with an
// NCHW output gradient, 1.19 -> 1.10 ms channels_last; what is left is mostly memory traffic.
// The arrays as backward_pixel's, their zeros already in place.
template <int64_t kSize>
void backward_pixel_estimated(const float* a, const float* bias, const float* g, float* out,
                              int64_t C, const Consts& p, float* sq, float* T, float* A,
                              float* GS) {
  constexpr int64_t before = kSize / 2, after = (kSize - 1) / 2;
  const __m512 k = _mm512_set1_ps(p.k), aos = _mm512_set1_ps(p.alpha_over_size);
  const __m512 coef = _mm512_set1_ps(p.coef), zero = _mm512_setzero_ps();
  auto tail = [C](int64_t c) -> __mmask16 { return C - c >= 16 ? 0xFFFF : (1u << (C - c)) - 1; };
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = tail(c);
    const __m512 av =
        _mm512_add_ps(_mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, bias + c));
    _mm512_mask_storeu_ps(A + c, m, av);
    _mm512_mask_storeu_ps(sq + before + c, m, _mm512_mul_ps(av, av));
  }
  for (int64_t c = 0; c < C; c += 16) {
    const __mmask16 m = tail(c);
    __m512 w = _mm512_maskz_loadu_ps(m, sq + c);
    for (int64_t t = 1; t < kSize; ++t) w = _mm512_add_ps(w, _mm512_maskz_loadu_ps(m, sq + c + t));
    __m512 s, inv_d;
    pow_neg075(_mm512_fmadd_ps(aos, w, k), s, inv_d);
    const __m512 av = _mm512_maskz_loadu_ps(m, A + c);
    // The ReLU passes the gradient where y = a s > 0 (NaN and 0 stop it, as in PyTorch).
    const __mmask16 pass =
        p.relu ? _mm512_mask_cmp_ps_mask(m, _mm512_mul_ps(av, s), zero, _CMP_GT_OQ) : m;
    const __m512 gv = _mm512_maskz_loadu_ps(pass, g + c);
    const __m512 s_over_d = _mm512_mul_ps(s, inv_d);
    _mm512_mask_storeu_ps(T + after + c, m, _mm512_mul_ps(_mm512_mul_ps(gv, av), s_over_d));
    _mm512_mask_storeu_ps(GS + c, m, _mm512_mul_ps(gv, s));
  }
  for (int64_t i = 0; i < C; i += 16) {
    const __mmask16 m = tail(i);
    __m512 w = _mm512_maskz_loadu_ps(m, T + i);
    for (int64_t t = 1; t < kSize; ++t) w = _mm512_add_ps(w, _mm512_maskz_loadu_ps(m, T + i + t));
    const __m512 scaled = _mm512_mul_ps(coef, _mm512_maskz_loadu_ps(m, A + i));
    const __m512 gs = _mm512_maskz_loadu_ps(m, GS + i);
    _mm512_mask_storeu_ps(out + i, m, _mm512_fnmadd_ps(scaled, w, gs));  // gs - coef a w
  }
}
#endif

// One pixel of one branch, channels contiguous. buf holds 4 * (C + size) values.
template <typename scalar_t, typename acc_t, bool kBeta075, int64_t kSize>
void backward_pixel(const scalar_t* a, const acc_t* bias, const scalar_t* g, scalar_t* out,
                    int64_t C, int64_t runtime_size, const Consts& p, acc_t* buf) {
  const int64_t size = kSize > 0 ? kSize : runtime_size;
  const int64_t before = size / 2, after = (size - 1) / 2;
  acc_t* __restrict__ sq = buf;             // sq[before + c] = a_c^2, zeros around
  acc_t* __restrict__ T = sq + C + size;    // T[after + c] = t_c, zeros around
  acc_t* __restrict__ A = T + C + size;
  acc_t* __restrict__ GS = A + C + size;
  std::fill(sq, sq + before, acc_t(0));
  std::fill(sq + before + C, sq + C + size, acc_t(0));
  std::fill(T, T + after, acc_t(0));
  std::fill(T + after + C, T + C + size, acc_t(0));
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<scalar_t, float> && kBeta075 && kSize > 0) {
    if (p.estimated) {
      backward_pixel_estimated<kSize>(a, bias, g, out, C, p, sq, T, A, GS);
      return;
    }
  }
#endif
  for (int64_t c = 0; c < C; ++c) {
    A[c] = static_cast<acc_t>(a[c]) + bias[c];
    sq[before + c] = A[c] * A[c];
  }
  const acc_t k = p.k, aos = p.alpha_over_size, beta = p.beta, coef = p.coef;
  for (int64_t c = 0; c < C; ++c) {
    acc_t w = 0;
    for (int64_t t = 0; t < size; ++t) w += sq[c + t];
    acc_t s, s_over_d;
    pow_neg_beta<acc_t, kBeta075>(k + aos * w, beta, s, s_over_d);
    // The ReLU passes the gradient where y = a s > 0 (NaN and 0 stop it, as in PyTorch).
    const acc_t gc = (p.relu && !(A[c] * s > acc_t(0))) ? acc_t(0) : static_cast<acc_t>(g[c]);
    T[after + c] = gc * A[c] * s_over_d;
    GS[c] = gc * s;
  }
  for (int64_t i = 0; i < C; ++i) {
    acc_t w = 0;
    for (int64_t t = 0; t < size; ++t) w += T[i + t];  // t_{i-after} .. t_{i+before}
    out[i] = static_cast<scalar_t>(GS[i] - coef * A[i] * w);
  }
}

constexpr int64_t kPixels = 32;

// A block of kPixels contiguous pixels of one branch (planar layout): arrays [C][kPixels].
template <typename scalar_t, typename acc_t, bool kBeta075>
void backward_block(const scalar_t* a, int64_t a_c, const acc_t* bias, const scalar_t* g,
                    int64_t g_c, scalar_t* out, int64_t out_c, int64_t C, int64_t P,
                    int64_t size, const Consts& p, acc_t* buf) {
  // Four disjoint arrays (restrict: the loops below vectorize without alias checks).
  acc_t* __restrict__ A = buf;                // a
  acc_t* __restrict__ G = A + C * kPixels;    // g, then g s (masked)
  acc_t* __restrict__ T = G + C * kPixels;    // g a s / d (masked)
  acc_t* __restrict__ S = T + C * kPixels;    // a^2
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* ac = a + c * a_c;
    const scalar_t* gc = g + c * g_c;
    acc_t* Ac = A + c * kPixels;
    acc_t* Gc = G + c * kPixels;
    for (int64_t q = 0; q < P; ++q) {
      Ac[q] = static_cast<acc_t>(ac[q]) + bias[c];
      Gc[q] = static_cast<acc_t>(gc[q]);
    }
    std::fill(Ac + P, Ac + kPixels, acc_t(0));  // a tail block's unused pixels
    std::fill(Gc + P, Gc + kPixels, acc_t(0));
    for (int64_t q = 0; q < kPixels; ++q) S[c * kPixels + q] = Ac[q] * Ac[q];
  }
  const int64_t before = size / 2, after = (size - 1) / 2;
  const acc_t k = p.k, aos = p.alpha_over_size, beta = p.beta, coef = p.coef;
  acc_t window[kPixels];
  for (int64_t c = 0; c < C; ++c) {
    const int64_t lo = std::max<int64_t>(0, c - before), hi = std::min<int64_t>(C - 1, c + after);
    std::fill(window, window + kPixels, acc_t(0));
    for (int64_t j = lo; j <= hi; ++j) {
      for (int64_t q = 0; q < kPixels; ++q) window[q] += S[j * kPixels + q];
    }
    for (int64_t q = 0; q < kPixels; ++q) {
      acc_t s, s_over_d;
      pow_neg_beta<acc_t, kBeta075>(k + aos * window[q], beta, s, s_over_d);
      const acc_t av = A[c * kPixels + q];
      const acc_t gv = (p.relu && !(av * s > acc_t(0))) ? acc_t(0) : G[c * kPixels + q];
      T[c * kPixels + q] = gv * av * s_over_d;
      G[c * kPixels + q] = gv * s;
    }
  }
  for (int64_t i = 0; i < C; ++i) {
    const int64_t lo = std::max<int64_t>(0, i - after), hi = std::min<int64_t>(C - 1, i + before);
    std::fill(window, window + kPixels, acc_t(0));
    for (int64_t c = lo; c <= hi; ++c) {
      for (int64_t q = 0; q < kPixels; ++q) window[q] += T[c * kPixels + q];
    }
    scalar_t* oi = out + i * out_c;
    for (int64_t q = 0; q < P; ++q) {
      oi[q] = static_cast<scalar_t>(G[i * kPixels + q] - coef * A[i * kPixels + q] * window[q]);
    }
  }
}

#if defined(__AVX512F__)
// dst[q * ld_dst + i] = src[i * ld_src + q] for a 16 × 16 block of floats, in registers:
// pairs of rows interleaved (32 bits, then 64), then 128-bit lanes exchanged.
inline void transpose16x16(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // u[4g + k], lane j: rows 4g..4g+3 of column 4j + k.
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  // Column 4j + k takes lane j of u[k], u[4 + k], u[8 + k], u[12 + k].
  for (int k = 0; k < 4; ++k) {
    const __m512 b0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x44);
    const __m512 b1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xEE);
    const __m512 b2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x44);
    const __m512 b3 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xEE);
    _mm512_storeu_ps(dst + k * ld_dst, _mm512_shuffle_f32x4(b0, b2, 0x88));
    _mm512_storeu_ps(dst + (4 + k) * ld_dst, _mm512_shuffle_f32x4(b0, b2, 0xDD));
    _mm512_storeu_ps(dst + (8 + k) * ld_dst, _mm512_shuffle_f32x4(b1, b3, 0x88));
    _mm512_storeu_ps(dst + (12 + k) * ld_dst, _mm512_shuffle_f32x4(b1, b3, 0xDD));
  }
}
#endif

// The CPU kernel writes all gradients in one layout, planar or channels-last-like; other
// destinations get a computed copy (lrn_relu_concat_backward_into).
bool cpu_writes_in_place(const std::vector<at::Tensor>& grads) {
  const bool planar = is_planar(grads[0]);
  for (const auto& g : grads) {
    if (!(planar ? is_planar(g) : is_channels_last_like(g))) return false;
  }
  return true;
}

void backward_cpu_kernel(const at::Tensor& grad_out_in, const std::vector<at::Tensor>& branches_in,
                         const std::vector<at::Tensor>& biases,
                         const std::vector<at::Tensor>& grads, const LrnParams& p) {
  // The grads were allocated in the first branch's layout; everything is brought to it.
  const bool channels_last = !is_planar(grads[0]) && is_channels_last_like(grads[0]);
  auto in_layout = [&](const at::Tensor& t) {
    if (channels_last) {
      return is_channels_last_like(t) ? t : t.contiguous(at::MemoryFormat::ChannelsLast);
    }
    return is_planar(t) ? t : t.contiguous();
  };
  // Channels-last branches take grad_out in any layout whose pixels form one axis, read in
  // place: an NCHW module output's gradient arrives NCHW, and copying it costs more than this
  // kernel's whole pass.
  const bool gather_grad = channels_last && pixel_stride(grad_out_in).has_value();
  const at::Tensor grad_out = gather_grad ? grad_out_in : in_layout(grad_out_in);
  std::vector<at::Tensor> branches;
  for (const auto& b : branches_in) branches.push_back(in_layout(b));
  TORCH_INTERNAL_ASSERT(cpu_writes_in_place(grads));
  const int64_t N = grad_out.size(0), HW = grad_out.size(2) * grad_out.size(3);
  int64_t max_c = 1;
  for (const auto& b : branches) max_c = std::max(max_c, b.size(1));
  const Consts consts{p.k, p.alpha / p.size, p.beta, 2.0 * p.alpha * p.beta / p.size, p.relu,
                      estimates_apply(p)};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "lrn_relu_concat_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    std::vector<int64_t> offsets;  // each branch's first channel in grad_out
    int64_t offset = 0;
    for (const auto& b : branches) {
      offsets.push_back(offset);
      offset += b.size(1);
    }
    const std::vector<acc_t> bias = channel_biases<scalar_t, acc_t>(biases, offset);
    const scalar_t* g_ptr = grad_out.const_data_ptr<scalar_t>();
    const bool beta075 = p.beta == 0.75;
    if (channels_last) {
      const int64_t g_ps = *pixel_stride(grad_out), g_cs = grad_out.stride(1);
      std::vector<int64_t> a_ps, o_ps;  // pixel strides, looked up once
      for (size_t i = 0; i < branches.size(); ++i) {
        a_ps.push_back(*pixel_stride(branches[i]));
        o_ps.push_back(*pixel_stride(grads[i]));
      }
      // A task is kBlock consecutive pixels of one image. A grad_out with strided channels
      // (NCHW) is transposed per branch into `gathered` ([pixel][channel]) so each pixel's
      // channels are contiguous again, pixel by pixel: contiguous stores, the strided loads
      // vectorized as gathers (the other loop order, a plane's kBlock values at a time with
      // strided stores, took 0.2 ms more of 4a's 1.5 ms).
      constexpr int64_t kBlock = 16;
      const int64_t blocks = (HW + kBlock - 1) / kBlock;
      at::parallel_for(0, N * blocks, std::max<int64_t>(1, 256 / std::max<int64_t>(1, offset)),
                       [&](int64_t begin, int64_t end) {
        std::vector<acc_t> buf(4 * (max_c + p.size));
        std::vector<scalar_t> gathered(g_cs == 1 ? 0 : kBlock * max_c);
        for (int64_t task = begin; task < end; ++task) {
          const int64_t n = task / blocks, px0 = (task % blocks) * kBlock;
          const int64_t P = std::min(kBlock, HW - px0);
          for (size_t i = 0; i < branches.size(); ++i) {
            const at::Tensor& b = branches[i];
            const int64_t Cb = b.size(1);
            const scalar_t* g0 = g_ptr + n * grad_out.stride(0) + px0 * g_ps + offsets[i] * g_cs;
            if (g_cs != 1) {
              int64_t done = 0;  // channels transposed in 16 × 16 blocks
#if defined(__AVX512F__)
              if constexpr (std::is_same_v<scalar_t, float>) {
                if (P == kBlock && g_ps == 1) {
                  // (the casts only compile the other dtypes' dispatch cases; float's are no-ops)
                  const float* from = reinterpret_cast<const float*>(g0);
                  float* to = reinterpret_cast<float*>(gathered.data());
                  for (; done + 16 <= Cb; done += 16) {
                    transpose16x16(from + done * g_cs, g_cs, to + done, Cb);
                  }
                }
              }
#endif
              for (int64_t q = 0; q < P; ++q) {
                for (int64_t c = done; c < Cb; ++c) gathered[q * Cb + c] = g0[c * g_cs + q * g_ps];
              }
            }
            for (int64_t q = 0; q < P; ++q) {
              const int64_t px = px0 + q;
              const scalar_t* a = b.const_data_ptr<scalar_t>() + n * b.stride(0) + px * a_ps[i];
              const scalar_t* g = g_cs != 1 ? gathered.data() + q * Cb : g0 + q * g_ps;
              scalar_t* o = grads[i].data_ptr<scalar_t>() + n * grads[i].stride(0) + px * o_ps[i];
              auto run = [&](auto is075, auto size) {
                backward_pixel<scalar_t, acc_t, decltype(is075)::value, decltype(size)::value>(
                    a, bias.data() + offsets[i], g, o, Cb, p.size, consts, buf.data());
              };
              if (p.size == 5) {
                beta075 ? run(std::true_type{}, std::integral_constant<int64_t, 5>{})
                        : run(std::false_type{}, std::integral_constant<int64_t, 5>{});
              } else {
                beta075 ? run(std::true_type{}, std::integral_constant<int64_t, 0>{})
                        : run(std::false_type{}, std::integral_constant<int64_t, 0>{});
              }
            }
          }
        }
      });
      return;
    }
    const int64_t blocks = (HW + kPixels - 1) / kPixels;
    const int64_t nb = static_cast<int64_t>(branches.size());
    at::parallel_for(0, N * blocks * nb, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(4 * max_c * kPixels);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i = task % nb, block = (task / nb) % blocks, n = task / (nb * blocks);
        const int64_t p0 = block * kPixels, P = std::min(kPixels, HW - p0);
        const at::Tensor& b = branches[i];
        const scalar_t* a = b.const_data_ptr<scalar_t>() + n * b.stride(0) + p0;
        const scalar_t* g = g_ptr + n * grad_out.stride(0) + offsets[i] * grad_out.stride(1) + p0;
        scalar_t* o = grads[i].data_ptr<scalar_t>() + n * grads[i].stride(0) + p0;
        auto run = [&](auto is075) {
          backward_block<scalar_t, acc_t, decltype(is075)::value>(
              a, b.stride(1), bias.data() + offsets[i], g, grad_out.stride(1), o, grads[i].stride(1),
              b.size(1), P, p.size, consts, buf.data());
        };
        beta075 ? run(std::true_type{}) : run(std::false_type{});
      }
    });
  });
}

// Validates the arguments; returns the biases as the kernels take them.
std::vector<at::Tensor> check_backward_args(const at::Tensor& grad_out,
                                            const std::vector<at::Tensor>& branches,
                                            const LrnParams& p,
                                            const std::optional<at::TensorList>& bias) {
  check_lrn_args(branches, p);
  std::vector<at::Tensor> biases = check_biases(branches, bias);
  int64_t channels = 0;
  for (const auto& b : branches) channels += b.size(1);
  const at::Tensor& first = branches[0];
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == first.size(0) &&
                  grad_out.size(1) == channels && grad_out.size(2) == first.size(2) &&
                  grad_out.size(3) == first.size(3),
              "lrn_relu_concat_backward: grad_out must have shape [", first.size(0), ", ",
              channels, ", ", first.size(2), ", ", first.size(3), "] for branches ",
              shapes_str(branches), ", got ", shape_str(grad_out));
  TORCH_CHECK(grad_out.scalar_type() == first.scalar_type() && grad_out.device() == first.device(),
              "lrn_relu_concat_backward: grad_out is ", grad_out.scalar_type(), " on ",
              grad_out.device(), ", the branches ", first.scalar_type(), " on ", first.device());
  return biases;
}

// New gradients, all in the first branch's layout (as the forward's output).
std::vector<at::Tensor> new_grads(const std::vector<at::Tensor>& branches) {
  std::vector<at::Tensor> grads;
  for (const auto& b : branches) {
    grads.push_back(at::empty(b.sizes(), b.options(), output_format(branches[0])));
  }
  return grads;
}

void run_backward(const at::Tensor& grad_out, const std::vector<at::Tensor>& branches,
                  const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& grads,
                  const LrnParams& p, bool emulate_cuda) {
  if (grad_out.numel() == 0) return;
  if (emulate_cuda) {
    lrn_relu_concat_backward_cuda_emulated(grad_out, branches, biases, grads, p);
  } else if (grad_out.is_cuda()) {
#ifdef WITH_CUDA
    lrn_relu_concat_backward_cuda_kernel(grad_out, branches, biases, grads, p);
#else
    TORCH_CHECK(false, "lrn_relu_concat_backward: this build of googlenet_fused._C has no CUDA "
                       "kernels");
#endif
  } else {
    backward_cpu_kernel(grad_out, branches, biases, grads, p);
  }
}

std::vector<at::Tensor> backward_impl(const at::Tensor& grad_out, at::TensorList branches_list,
                                      int64_t size, double alpha, double beta, double k,
                                      bool relu, const std::optional<at::TensorList>& bias,
                                      bool emulate_cuda) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  const std::vector<at::Tensor> biases = check_backward_args(grad_out, branches, p, bias);
  std::vector<at::Tensor> grads = new_grads(branches);
  run_backward(grad_out, branches, biases, grads, p, emulate_cuda);
  return grads;
}

void backward_into_impl(at::TensorList grads_list, const at::Tensor& grad_out,
                        at::TensorList branches_list, int64_t size, double alpha, double beta,
                        double k, bool relu, const std::optional<at::TensorList>& bias,
                        bool emulate_cuda) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const std::vector<at::Tensor> grads = grads_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  const std::vector<at::Tensor> biases = check_backward_args(grad_out, branches, p, bias);
  TORCH_CHECK(grads.size() == branches.size(), "lrn_relu_concat_backward_into: expected one "
              "gradient per branch (", branches.size(), "), got ", grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = grads[i];
    TORCH_CHECK(g.sizes() == branches[i].sizes() && g.scalar_type() == branches[i].scalar_type() &&
                    g.device() == branches[i].device(),
                "lrn_relu_concat_backward_into: gradient ", i, " is ", g.scalar_type(), " ",
                shape_str(g), " on ", g.device(), ", its branch ", branches[i].scalar_type(), " ",
                shape_str(branches[i]), " on ", branches[i].device());
    TORCH_CHECK(at::has_internal_overlap(g) != at::MemOverlap::Yes,
                "lrn_relu_concat_backward_into: gradient ", i, " of shape ", shape_str(g),
                " has elements that share memory (e.g. an expanded tensor)");
    TORCH_CHECK(!may_share_memory(g, grad_out), "lrn_relu_concat_backward_into: gradient ", i,
                " overlaps grad_out");
    for (size_t j = 0; j < branches.size(); ++j) {
      TORCH_CHECK(!may_share_memory(g, branches[j]), "lrn_relu_concat_backward_into: gradient ",
                  i, " overlaps branch ", j);
    }
  }
  if (emulate_cuda || grad_out.is_cuda() || cpu_writes_in_place(grads)) {
    run_backward(grad_out, branches, biases, grads, p, emulate_cuda);
    return;
  }
  const std::vector<at::Tensor> dense = new_grads(branches);
  run_backward(grad_out, branches, biases, dense, p, false);
  for (size_t i = 0; i < grads.size(); ++i) grads[i].copy_(dense[i]);
}

void lrn_relu_concat_backward_into(at::TensorList grads, const at::Tensor& grad_out,
                                   at::TensorList branches, int64_t size, double alpha,
                                   double beta, double k, bool relu,
                                   std::optional<at::TensorList> bias) {
  backward_into_impl(grads, grad_out, branches, size, alpha, beta, k, relu, bias, false);
}

std::vector<at::Tensor> lrn_relu_concat_backward(const at::Tensor& grad_out,
                                                 at::TensorList branches, int64_t size,
                                                 double alpha, double beta, double k, bool relu,
                                                 std::optional<at::TensorList> bias) {
  return backward_impl(grad_out, branches, size, alpha, beta, k, relu, bias, false);
}

// Test-only: the CUDA kernel's launch emulated on CPU tensors.
std::vector<at::Tensor> lrn_relu_concat_backward_cuda_emulated_op(
    const at::Tensor& grad_out, at::TensorList branches, int64_t size, double alpha, double beta,
    double k, bool relu, std::optional<at::TensorList> bias) {
  TORCH_CHECK(grad_out.is_cpu(), "_lrn_relu_concat_backward_cuda_emulated: emulation runs on "
                                 "CPU tensors");
  return backward_impl(grad_out, branches, size, alpha, beta, k, relu, bias, true);
}

// Test-only: the CUDA launch emulated on CPU tensors, writing into the given gradients.
void lrn_relu_concat_backward_cuda_emulated_into(at::TensorList grads, const at::Tensor& grad_out,
                                                 at::TensorList branches, int64_t size,
                                                 double alpha, double beta, double k, bool relu,
                                                 std::optional<at::TensorList> bias) {
  TORCH_CHECK(grad_out.is_cpu(), "_lrn_relu_concat_backward_cuda_emulated_into: emulation runs "
                                 "on CPU tensors");
  backward_into_impl(grads, grad_out, branches, size, alpha, beta, k, relu, bias, true);
}

}  // namespace
}  // namespace googlenet_fused

TORCH_LIBRARY_FRAGMENT(googlenet_fused, m) {
  // The gradient of lrn_relu_concat w.r.t. each branch (and so each bias: its sum over N, H, W).
  m.def("lrn_relu_concat_backward(Tensor grad_out, Tensor[] branches, int size, float alpha, "
        "float beta, float k, bool relu, Tensor[]? bias=None) -> Tensor[]");
  // Writes each branch's gradient into `grads` (any strides, e.g. channel slices of one tensor
  // that a merged convolution's backward reads; they must not overlap one another).
  m.def("lrn_relu_concat_backward_into(Tensor(a!)[] grads, Tensor grad_out, Tensor[] branches, "
        "int size, float alpha, float beta, float k, bool relu, Tensor[]? bias=None) -> ()");
  m.def("_lrn_relu_concat_backward_cuda_emulated(Tensor grad_out, Tensor[] branches, int size, "
        "float alpha, float beta, float k, bool relu, Tensor[]? bias=None) -> Tensor[]");
  m.def("_lrn_relu_concat_backward_cuda_emulated_into(Tensor(a!)[] grads, Tensor grad_out, "
        "Tensor[] branches, int size, float alpha, float beta, float k, bool relu, "
        "Tensor[]? bias=None) -> ()");
}

TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("lrn_relu_concat_backward", &googlenet_fused::lrn_relu_concat_backward);
  m.impl("lrn_relu_concat_backward_into", &googlenet_fused::lrn_relu_concat_backward_into);
  m.impl("_lrn_relu_concat_backward_cuda_emulated",
         &googlenet_fused::lrn_relu_concat_backward_cuda_emulated_op);
  m.impl("_lrn_relu_concat_backward_cuda_emulated_into",
         &googlenet_fused::lrn_relu_concat_backward_cuda_emulated_into);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(googlenet_fused, CUDA, m) {
  m.impl("lrn_relu_concat_backward", &googlenet_fused::lrn_relu_concat_backward);
  m.impl("lrn_relu_concat_backward_into", &googlenet_fused::lrn_relu_concat_backward_into);
}
#endif
