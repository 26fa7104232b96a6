// The work of one CUDA thread of lrn_relu_concat_backward as __host__ __device__ code, and its
// launch plan, shared by the CUDA launcher and the CPU emulation that the tests run (as for
// the forward: lrn_relu_concat_thread.h, whose grid, index types and Norm it reuses).
//
// A thread owns one pixel of one branch and walks its channels once. With a window of 5 it
// moves them in 16-byte chunks as the forward does (one 16-byte load or store per chunk where
// channels are contiguous and aligned: channels_last), holding in registers what the window
// needs of the chunks around (see backward5). Other window sizes take a loop that re-reads
// each channel's window (cache hits).
#pragma once

#include "lrn_relu_concat_thread.h"

namespace googlenet_fused {
namespace lrn_thread {

template <typename index_t>
struct GradBranch {
  void* data;  // the gradient of this branch, [N, C_i, H, W]
  index_t stride_n, stride_c, stride_h, stride_w;
  bool vector_store;  // stride_c == 1 and every chunk 16-byte aligned
};

template <typename index_t, typename acc_t>
struct BackwardArgs {
  Args<index_t, acc_t> fwd;  // branches (inputs, biases, channel offsets) and grad_out as `out`
  GradBranch<index_t> grad[kMaxBranches];
  acc_t coef;                // 2 alpha beta / size
};

template <typename acc_t>
C10_HOST_DEVICE inline void grad_terms(acc_t a, acc_t g, acc_t window_sum, const Norm<acc_t>& p,
                                       bool relu, acc_t& t, acc_t& gs) {
  const acc_t d = p.k + p.alpha_over_size * window_sum;
  const acc_t s = pow_neg(d, p);
  if (relu && !(a * s > acc_t(0))) g = acc_t(0);  // the ReLU passes where y > 0
  t = g * a * s / d;
  gs = g * s;
}

// Window of 5, in chunks of 16 bytes as the forward (window5): the gradient of channel i is
// gs_i - coef a_i (t_{i-2} + ... + t_{i+2}), so a chunk's gradients are written once the next
// chunk's t are known. Registers hold the previous chunk (a, gs, t), the t of the two channels
// before it, and the squares of the two channels before the current chunk.
template <typename scalar_t, typename index_t, typename acc_t>
C10_HOST_DEVICE inline void backward5(const scalar_t* src, index_t src_c, const scalar_t* gsrc,
                                      index_t g_c, scalar_t* dst, index_t dst_c,
                                      const Branch<index_t>& b, bool vector_grad,
                                      const Norm<acc_t>& p, bool relu, acc_t coef) {
  constexpr int CH = chunk_of<scalar_t>();
  static_assert(CH >= 2, "a chunk must cover the window's two channels after");
  acc_t cur[CH], next[CH], g[CH];
  acc_t a_prev[CH] = {}, gs_prev[CH] = {}, t_prev[CH] = {};
  acc_t t_before0 = 0, t_before1 = 0;    // t of the two channels before the previous chunk
  acc_t sq_before0 = 0, sq_before1 = 0;  // squares of the two channels before the current one
  // Gradients of the previous chunk [c0, c0 + CH), given the t of the two channels after it.
  auto emit = [&](int32_t c0, acc_t t_after0, acc_t t_after1) {
    acc_t tw[CH + 4];
    tw[0] = t_before0;
    tw[1] = t_before1;
#pragma unroll
    for (int j = 0; j < CH; ++j) tw[2 + j] = t_prev[j];
    tw[CH + 2] = t_after0;
    tw[CH + 3] = t_after1;
    acc_t grad[CH];
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      grad[j] = gs_prev[j] - coef * a_prev[j] * (tw[j] + tw[j + 1] + tw[j + 2] + tw[j + 3] + tw[j + 4]);
    }
    store_chunk<scalar_t, index_t, acc_t, CH>(dst, dst_c, c0, b.channels, vector_grad, grad);
  };
  load_biased_chunk<scalar_t, index_t, acc_t, CH>(src, src_c, 0, b, cur);
  int32_t last = 0;
  for (int32_t c0 = 0; c0 < b.channels; c0 += CH) {
    load_biased_chunk<scalar_t, index_t, acc_t, CH>(src, src_c, c0 + CH, b, next);
    // grad_out's slice sits where the forward writes its output: the same vector flag.
    load_chunk<scalar_t, index_t, acc_t, CH>(gsrc, g_c, c0, b.channels, b.vector_store, g);
    acc_t sq[CH + 4];
    chunk_squares(sq_before0, sq_before1, cur, next, sq);
    acc_t t[CH], gs[CH];
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      grad_terms(cur[j], g[j], sq[j] + sq[j + 1] + sq[j + 2] + sq[j + 3] + sq[j + 4], p, relu,
                 t[j], gs[j]);
    }
    if (c0 > 0) emit(c0 - CH, t[0], t[1]);
    t_before0 = t_prev[CH - 2];
    t_before1 = t_prev[CH - 1];
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      a_prev[j] = cur[j], gs_prev[j] = gs[j], t_prev[j] = t[j], cur[j] = next[j];
    }
    sq_before0 = sq[CH];
    sq_before1 = sq[CH + 1];
    last = c0;
  }
  if (b.channels > 0) emit(last, acc_t(0), acc_t(0));  // past the last channel t is 0
}

template <typename scalar_t, typename index_t, typename acc_t>
C10_HOST_DEVICE inline void backward_any(const scalar_t* src, index_t src_c, const scalar_t* bias,
                                         const scalar_t* gsrc, index_t g_c, scalar_t* dst,
                                         index_t dst_c, int32_t channels, const Norm<acc_t>& p,
                                         bool relu, acc_t coef) {
  const int32_t before = p.size / 2, after = (p.size - 1) / 2;
  auto value = [&](int32_t c) {
    const acc_t v = static_cast<acc_t>(src[static_cast<index_t>(c) * src_c]);
    return bias != nullptr ? v + static_cast<acc_t>(bias[c]) : v;
  };
  auto terms = [&](int32_t c, acc_t& t, acc_t& gs) {
    const int32_t lo = c - before > 0 ? c - before : 0;
    const int32_t hi = c + after < channels - 1 ? c + after : channels - 1;
    acc_t s = 0;
    for (int32_t w = lo; w <= hi; ++w) s += value(w) * value(w);
    grad_terms(value(c), static_cast<acc_t>(gsrc[static_cast<index_t>(c) * g_c]), s, p, relu, t,
               gs);
  };
  for (int32_t i = 0; i < channels; ++i) {
    const int32_t lo = i - after > 0 ? i - after : 0;
    const int32_t hi = i + before < channels - 1 ? i + before : channels - 1;
    acc_t sum_t = 0, t, gs, gs_i = 0;
    for (int32_t c = lo; c <= hi; ++c) {
      terms(c, t, gs);
      sum_t += t;
      if (c == i) gs_i = gs;
    }
    dst[static_cast<index_t>(i) * dst_c] = static_cast<scalar_t>(gs_i - coef * value(i) * sum_t);
  }
}

template <typename scalar_t, typename index_t>
C10_HOST_DEVICE inline void run_backward_thread(
    const BackwardArgs<index_t, acc_of<scalar_t>>& args, uint32_t block_x, uint32_t block_y,
    uint32_t thread_x) {
  const Args<index_t, acc_of<scalar_t>>& a = args.fwd;
  const uint32_t q = block_x * static_cast<uint32_t>(kThreads) + thread_x;
  if (q >= a.pixels || block_y >= static_cast<uint32_t>(a.count)) return;
  const Branch<index_t>& b = a.branch[block_y];
  const GradBranch<index_t>& gb = args.grad[block_y];
  const uint32_t n = q / a.hw, pixel = q - n * a.hw;
  const uint32_t h = pixel / a.width, w = pixel - h * a.width;
  const index_t ni = static_cast<index_t>(n), hi = static_cast<index_t>(h);
  const index_t wi = static_cast<index_t>(w);
  const auto* src = static_cast<const scalar_t*>(b.data) + ni * b.stride_n + hi * b.stride_h +
                    wi * b.stride_w;
  const auto* gsrc = static_cast<const scalar_t*>(a.out) + ni * a.out_n +
                     static_cast<index_t>(b.offset) * a.out_c + hi * a.out_h + wi * a.out_w;
  auto* dst = static_cast<scalar_t*>(gb.data) + ni * gb.stride_n + hi * gb.stride_h +
              wi * gb.stride_w;
  const auto* bias = static_cast<const scalar_t*>(b.bias);
  const bool relu = a.norm.lower == 0;
  if (a.norm.size == 5) {
    backward5<scalar_t, index_t>(src, b.stride_c, gsrc, a.out_c, dst, gb.stride_c, b,
                                 gb.vector_store, a.norm, relu, args.coef);
  } else {
    backward_any<scalar_t, index_t>(src, b.stride_c, bias, gsrc, a.out_c, dst, gb.stride_c,
                                    b.channels, a.norm, relu, args.coef);
  }
}

// Whether every offset fits in int32, the grads included.
inline bool backward_fits_int32(const at::Tensor& grad_out, const std::vector<at::Tensor>& branches,
                                const std::vector<at::Tensor>& grads) {
  int64_t worst = 0;
  for (const auto& g : grads) worst = std::max(worst, max_offset(g));
  return worst < std::numeric_limits<int32_t>::max() && fits_int32(branches, grad_out);
}

template <typename scalar_t, typename index_t, typename Launch>
void for_each_backward_launch(const at::Tensor& grad_out, const std::vector<at::Tensor>& branches,
                              const std::vector<at::Tensor>& biases,
                              const std::vector<at::Tensor>& grads, const LrnParams& p,
                              Launch&& launch) {
  using acc_t = acc_of<scalar_t>;
  BackwardArgs<index_t, acc_t> args{};
  args.coef = static_cast<acc_t>(2.0 * p.alpha * p.beta / p.size);
  size_t table = 0;
  // The forward's plan, with grad_out in place of the output: same tables, same grid.
  for_each_launch<scalar_t, index_t>(
      branches, biases, grad_out, p,
      [&](const Args<index_t, acc_t>& fwd, uint32_t blocks_x, uint32_t blocks_y) {
        args.fwd = fwd;
        for (int i = 0; i < fwd.count; ++i) {
          const at::Tensor& g = grads[table * kMaxBranches + i];
          args.grad[i] = GradBranch<index_t>{
              g.data_ptr(), static_cast<index_t>(g.stride(0)), static_cast<index_t>(g.stride(1)),
              static_cast<index_t>(g.stride(2)), static_cast<index_t>(g.stride(3)),
              g.stride(1) == 1 &&
                  aligned_chunks<scalar_t>(g.data_ptr(), {g.stride(0), g.stride(2), g.stride(3)})};
        }
        ++table;
        launch(args, blocks_x, blocks_y);
      });
}

}  // namespace lrn_thread
}  // namespace googlenet_fused
