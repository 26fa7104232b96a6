// The work of one CUDA thread of lrn_relu_concat, as __host__ __device__ code, and the launch
// plan shared by the CUDA launcher (lrn_relu_concat_cuda.cu) and its CPU emulation
// (lrn_relu_concat_emulated.cpp), which runs this same function over every block and thread
// index of the same grid, so that the indexing is tested where there is no GPU.
//
// Grid: x over the N*H*W pixels (kThreads per block), y over the branches of one table. A
// thread owns one pixel of one branch and walks its channels in chunks of 16 bytes (8 fp16 /
// bf16, 4 fp32, 2 fp64 values): every input is read once, the LRN window (size 5) is summed
// from squares held in registers, and a chunk is one 16-byte load and store when the layout
// allows (channels contiguous and aligned: channels_last), else scalar loads that are coalesced
// across the warp (NCHW: neighbouring threads read neighbouring pixels). Indices: the pixel is
// split with 32-bit division once per thread; element offsets are int32 when every tensor fits,
// int64 otherwise; no division per element. Other window sizes take a generic per-channel loop.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "lrn_relu_concat.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <initializer_list>
#include <vector>

namespace googlenet_fused {
namespace lrn_thread {

constexpr int kMaxBranches = 8;
constexpr int kThreads = 128;
constexpr int kVectorBytes = 16;

template <typename scalar_t>
constexpr int chunk_of() {
  return kVectorBytes / static_cast<int>(sizeof(scalar_t));
}

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

template <typename index_t>
struct Branch {
  const void* data;
  const void* bias;   // [channels], contiguous, or null
  index_t stride_n, stride_c, stride_h, stride_w;
  int32_t channels;
  int32_t offset;     // first channel of this branch in the output
  bool vector_load;   // stride_c == 1 and every chunk 16-byte aligned
  bool vector_store;  // the same for this branch's slice of the output
  bool vector_bias;   // the bias 16-byte aligned
};

template <typename acc_t>
struct Norm {
  acc_t k, alpha_over_size, beta, lower;  // lower: 0 with the ReLU, -inf without
  bool beta075;
  int32_t size;
};

template <typename index_t, typename acc_t>
struct Args {
  Branch<index_t> branch[kMaxBranches];
  int32_t count;
  void* out;
  index_t out_n, out_c, out_h, out_w;
  uint32_t pixels, hw, width;  // N*H*W, H*W, W
  Norm<acc_t> norm;
};

// d ** -beta in the accumulation type; beta = 0.75 (the network's) without pow.
C10_HOST_DEVICE inline float pow_neg(float d, const Norm<float>& p) {
#ifdef __CUDA_ARCH__
  if (p.beta075) {  // d^-1/2 * (d^-1/2)^1/2, two fast reciprocal square roots
    const float r = rsqrtf(d);
    return r * (r * rsqrtf(r));
  }
  return exp2f(-p.beta * log2f(d));
#else
  if (p.beta075) {
    const float r = 1.0f / std::sqrt(d);
    return r * std::sqrt(r);
  }
  return std::exp2(-p.beta * std::log2(d));
#endif
}

C10_HOST_DEVICE inline double pow_neg(double d, const Norm<double>& p) {
  return p.beta075 ? 1.0 / (sqrt(d) * sqrt(sqrt(d))) : pow(d, -p.beta);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t normalize(acc_t a, acc_t window_sum, const Norm<acc_t>& p) {
  const acc_t y = a * pow_neg(p.k + p.alpha_over_size * window_sum, p);
  return y < p.lower ? p.lower : y;  // NaN stays NaN
}

template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) Vec {
  scalar_t v[N];
};

// Channels [c0, c0 + CH) of one pixel, zeros past the branch's last channel.
template <typename scalar_t, typename index_t, typename acc_t, int CH>
C10_HOST_DEVICE inline void load_chunk(const scalar_t* src, index_t stride_c, int32_t c0,
                                       int32_t channels, bool vector, acc_t (&dst)[CH]) {
  if (vector && c0 + CH <= channels) {
    Vec<scalar_t, CH> chunk;
#ifdef __CUDA_ARCH__
    chunk = *reinterpret_cast<const Vec<scalar_t, CH>*>(src + c0);
#else  // the emulation: what would fault on the GPU fails here
    TORCH_INTERNAL_ASSERT(reinterpret_cast<uintptr_t>(src + c0) % kVectorBytes == 0,
                          "lrn_relu_concat: misaligned 16-byte load");
    std::memcpy(&chunk, src + c0, sizeof(chunk));
#endif
#pragma unroll
    for (int j = 0; j < CH; ++j) dst[j] = static_cast<acc_t>(chunk.v[j]);
    return;
  }
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    dst[j] = c0 + j < channels ? static_cast<acc_t>(src[static_cast<index_t>(c0 + j) * stride_c])
                               : acc_t(0);
  }
}

template <typename scalar_t, typename index_t, typename acc_t, int CH>
C10_HOST_DEVICE inline void store_chunk(scalar_t* dst, index_t stride_c, int32_t c0,
                                        int32_t channels, bool vector, const acc_t (&y)[CH]) {
  if (vector && c0 + CH <= channels) {
    Vec<scalar_t, CH> chunk;
#pragma unroll
    for (int j = 0; j < CH; ++j) chunk.v[j] = static_cast<scalar_t>(y[j]);
#ifdef __CUDA_ARCH__
    *reinterpret_cast<Vec<scalar_t, CH>*>(dst + c0) = chunk;
#else
    TORCH_INTERNAL_ASSERT(reinterpret_cast<uintptr_t>(dst + c0) % kVectorBytes == 0,
                          "lrn_relu_concat: misaligned 16-byte store");
    std::memcpy(dst + c0, &chunk, sizeof(chunk));
#endif
    return;
  }
#pragma unroll
  for (int j = 0; j < CH; ++j) {
    if (c0 + j < channels) dst[static_cast<index_t>(c0 + j) * stride_c] = static_cast<scalar_t>(y[j]);
  }
}

// A branch's channels [c0, c0 + CH) at one pixel plus their bias; zeros past the last channel.
template <typename scalar_t, typename index_t, typename acc_t, int CH>
C10_HOST_DEVICE inline void load_biased_chunk(const scalar_t* src, index_t src_c, int32_t c0,
                                              const Branch<index_t>& b, acc_t (&v)[CH]) {
  load_chunk<scalar_t, index_t, acc_t, CH>(src, src_c, c0, b.channels, b.vector_load, v);
  const auto* bias = static_cast<const scalar_t*>(b.bias);
  if (bias != nullptr) {
    acc_t bv[CH];
    load_chunk<scalar_t, index_t, acc_t, CH>(bias, index_t(1), c0, b.channels, b.vector_bias, bv);
#pragma unroll
    for (int j = 0; j < CH; ++j) v[j] += bv[j];
  }
}

// Squares of channels [c0 - 2, c0 + CH + 2) around a chunk `cur` at c0: the two before it
// (`before0`, `before1`), its own, and the first two of the `next` chunk.
template <typename acc_t, int CH>
C10_HOST_DEVICE inline void chunk_squares(acc_t before0, acc_t before1, const acc_t (&cur)[CH],
                                          const acc_t (&next)[CH], acc_t (&sq)[CH + 4]) {
  sq[0] = before0;
  sq[1] = before1;
#pragma unroll
  for (int j = 0; j < CH; ++j) sq[2 + j] = cur[j] * cur[j];
  sq[CH + 2] = next[0] * next[0];
  sq[CH + 3] = next[1] * next[1];
}

// Window of 5 (2 channels before, 2 after): each chunk's outputs need the squares of the last
// two channels of the previous chunk and of the first two of the next, kept in registers.
template <typename scalar_t, typename index_t, typename acc_t>
C10_HOST_DEVICE inline void window5(const scalar_t* src, index_t src_c, scalar_t* dst,
                                    index_t dst_c, const Branch<index_t>& b,
                                    const Norm<acc_t>& p) {
  constexpr int CH = chunk_of<scalar_t>();
  static_assert(CH >= 2, "a chunk must cover the window's two channels after");
  auto load = [&](int32_t c0, acc_t(&v)[CH]) {
    load_biased_chunk<scalar_t, index_t, acc_t, CH>(src, src_c, c0, b, v);
  };
  acc_t cur[CH], next[CH];
  acc_t before0 = 0, before1 = 0;  // squares of the two channels before the chunk
  load(0, cur);
  for (int32_t c0 = 0; c0 < b.channels; c0 += CH) {
    load(c0 + CH, next);
    acc_t sq[CH + 4];
    chunk_squares(before0, before1, cur, next, sq);
    acc_t y[CH];
#pragma unroll
    for (int j = 0; j < CH; ++j) {
      y[j] = normalize(cur[j], sq[j] + sq[j + 1] + sq[j + 2] + sq[j + 3] + sq[j + 4], p);
    }
    store_chunk<scalar_t, index_t, acc_t, CH>(dst, dst_c, c0, b.channels, b.vector_store, y);
    before0 = sq[CH];
    before1 = sq[CH + 1];
#pragma unroll
    for (int j = 0; j < CH; ++j) cur[j] = next[j];
  }
}

// Any window: each channel sums its window from memory (cache hits after the first read).
template <typename scalar_t, typename index_t, typename acc_t>
C10_HOST_DEVICE inline void window_any(const scalar_t* src, index_t src_c, scalar_t* dst,
                                       index_t dst_c, const Branch<index_t>& b,
                                       const Norm<acc_t>& p) {
  const int32_t before = p.size / 2, after = (p.size - 1) / 2;
  const auto* bias = static_cast<const scalar_t*>(b.bias);
  auto value = [&](int32_t c) {
    const acc_t v = static_cast<acc_t>(src[static_cast<index_t>(c) * src_c]);
    return bias != nullptr ? v + static_cast<acc_t>(bias[c]) : v;
  };
  for (int32_t c = 0; c < b.channels; ++c) {
    const int32_t lo = c - before > 0 ? c - before : 0;
    const int32_t hi = c + after < b.channels - 1 ? c + after : b.channels - 1;
    acc_t s = 0;
    for (int32_t t = lo; t <= hi; ++t) {
      const acc_t v = value(t);
      s += v * v;
    }
    const acc_t a = value(c);
    dst[static_cast<index_t>(c) * dst_c] = static_cast<scalar_t>(normalize(a, s, p));
  }
}

// The whole work of thread (block_x, block_y, thread_x).
template <typename scalar_t, typename index_t>
C10_HOST_DEVICE inline void run_thread(const Args<index_t, acc_of<scalar_t>>& a, uint32_t block_x,
                                       uint32_t block_y, uint32_t thread_x) {
  const uint32_t q = block_x * static_cast<uint32_t>(kThreads) + thread_x;
  if (q >= a.pixels || block_y >= static_cast<uint32_t>(a.count)) return;
  const Branch<index_t>& b = a.branch[block_y];
  const uint32_t n = q / a.hw, pixel = q - n * a.hw;
  const uint32_t h = pixel / a.width, w = pixel - h * a.width;
  const scalar_t* src = static_cast<const scalar_t*>(b.data) + static_cast<index_t>(n) * b.stride_n +
                        static_cast<index_t>(h) * b.stride_h + static_cast<index_t>(w) * b.stride_w;
  scalar_t* dst = static_cast<scalar_t*>(a.out) + static_cast<index_t>(n) * a.out_n +
                  static_cast<index_t>(b.offset) * a.out_c + static_cast<index_t>(h) * a.out_h +
                  static_cast<index_t>(w) * a.out_w;
  if (a.norm.size == 5) {
    window5<scalar_t, index_t>(src, b.stride_c, dst, a.out_c, b, a.norm);
  } else {
    window_any<scalar_t, index_t>(src, b.stride_c, dst, a.out_c, b, a.norm);
  }
}

// ------------------------------------------------------------------------------ host side
// The launches of one op call: a table of up to kMaxBranches branches each, grid
// (ceil(pixels / kThreads), branches in the table). `launch(args, blocks_x, blocks_y)` runs one.

inline int64_t max_offset(const at::Tensor& t) {
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * std::abs(t.stride(d));
  return last;
}

// Whether every element offset a thread forms fits in int32.
inline bool fits_int32(const std::vector<at::Tensor>& branches, const at::Tensor& out) {
  int64_t worst = max_offset(out);
  for (const auto& b : branches) worst = std::max(worst, max_offset(b));
  return worst < std::numeric_limits<int32_t>::max();
}

template <typename scalar_t>
bool aligned_chunks(const void* ptr, std::initializer_list<int64_t> strides) {
  constexpr int CH = chunk_of<scalar_t>();
  if (reinterpret_cast<uintptr_t>(ptr) % kVectorBytes != 0) return false;
  for (int64_t s : strides) {
    if (s % CH != 0) return false;
  }
  return true;
}

template <typename scalar_t, typename index_t, typename Launch>
void for_each_launch(const std::vector<at::Tensor>& branches, const std::vector<at::Tensor>& biases,
                     const at::Tensor& out, const LrnParams& p, Launch&& launch) {
  using acc_t = acc_of<scalar_t>;
  const int64_t N = out.size(0), H = out.size(2), W = out.size(3);
  TORCH_CHECK(N * H * W < (int64_t(1) << 32) - kThreads, "lrn_relu_concat: ", N * H * W,
              " pixels (N*H*W of ", out.sizes(), ") exceed what one CUDA launch indexes (2^32)");
  Args<index_t, acc_t> a{};
  a.out = out.data_ptr();
  a.out_n = out.stride(0), a.out_c = out.stride(1), a.out_h = out.stride(2), a.out_w = out.stride(3);
  a.pixels = static_cast<uint32_t>(N * H * W);
  a.hw = static_cast<uint32_t>(H * W), a.width = static_cast<uint32_t>(W);
  a.norm = Norm<acc_t>{static_cast<acc_t>(p.k), static_cast<acc_t>(p.alpha / p.size),
                       static_cast<acc_t>(p.beta),
                       p.relu ? acc_t(0) : -std::numeric_limits<acc_t>::infinity(),
                       p.beta == 0.75, static_cast<int32_t>(p.size)};
  const auto* out_base = static_cast<const char*>(a.out);
  const bool out_vector = out.stride(1) == 1;
  const uint32_t blocks_x = (a.pixels + kThreads - 1) / kThreads;
  int64_t first_channel = 0;
  for (size_t start = 0; start < branches.size(); start += kMaxBranches) {
    a.count = static_cast<int32_t>(std::min<size_t>(kMaxBranches, branches.size() - start));
    for (int i = 0; i < a.count; ++i) {
      const at::Tensor& b = branches[start + i];
      const void* bias = biases.empty() ? nullptr : biases[start + i].const_data_ptr();
      const int64_t offset = first_channel;
      first_channel += b.size(1);
      a.branch[i] = Branch<index_t>{
          b.const_data_ptr(), bias,
          static_cast<index_t>(b.stride(0)), static_cast<index_t>(b.stride(1)),
          static_cast<index_t>(b.stride(2)), static_cast<index_t>(b.stride(3)),
          static_cast<int32_t>(b.size(1)), static_cast<int32_t>(offset),
          b.stride(1) == 1 &&
              aligned_chunks<scalar_t>(b.const_data_ptr(), {b.stride(0), b.stride(2), b.stride(3)}),
          out_vector && aligned_chunks<scalar_t>(out_base + offset * out.stride(1) * sizeof(scalar_t),
                                                 {out.stride(0), out.stride(2), out.stride(3)}),
          bias != nullptr && aligned_chunks<scalar_t>(bias, {})};
    }
    if (blocks_x > 0) launch(a, blocks_x, static_cast<uint32_t>(a.count));
  }
}

}  // namespace lrn_thread
}  // namespace googlenet_fused
