// lrn_relu_concat: out[:, off_i:off_i+C_i] = relu(local_response_norm(branch_i)), in one pass
// (with relu=false: plain local_response_norm, e.g. an LRN that is not followed by a ReLU).
//
// The LRN window stays inside each branch (zeros beyond its edges), exactly as the reference
// computes it branch by branch, with PyTorch's formula:
//   b_c = a_c / (k + alpha/size * sum_{c' = c - size/2}^{c + (size-1)/2} a_c'^2) ** beta
// The CPU kernel works on one of two layouts: "planar" (each channel's H*W pixels contiguous:
// NCHW and its channel slices) and "channels-last" (channels contiguous at each pixel).
// Channels-last branches are read in place for an output of either layout; other inputs whose
// strides do not fit the output's layout are copied once into it.
#include "lrn_relu_concat.h"
#include "layout.h"
#include "lrn_estimates.h"

#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace googlenet_fused {

void check_lrn_args(const std::vector<at::Tensor>& branches, const LrnParams& p) {
  TORCH_CHECK(!branches.empty(), "lrn_relu_concat: expected at least one branch, got an empty list");
  TORCH_CHECK(p.size >= 1, "lrn_relu_concat: LRN size must be >= 1, got ", p.size);
  const at::Tensor& first = branches[0];
  for (size_t i = 0; i < branches.size(); ++i) {
    const at::Tensor& b = branches[i];
    TORCH_CHECK(b.dim() == 4, "lrn_relu_concat: branch ", i, " must be 4-D [N, C, H, W], got shape ",
                shape_str(b));
    TORCH_CHECK(at::isFloatingType(b.scalar_type()),
                "lrn_relu_concat: branches must be floating point, branch ", i, " is ",
                b.scalar_type());
    TORCH_CHECK(b.scalar_type() == first.scalar_type(),
                "lrn_relu_concat: all branches must share a dtype; branch 0 is ",
                first.scalar_type(), ", branch ", i, " is ", b.scalar_type());
    TORCH_CHECK(b.device() == first.device(),
                "lrn_relu_concat: all branches must be on one device; branch 0 is on ",
                first.device(), ", branch ", i, " on ", b.device());
    TORCH_CHECK(b.size(0) == first.size(0) && b.size(2) == first.size(2) &&
                    b.size(3) == first.size(3),
                "lrn_relu_concat: branches must agree in N, H and W; got shapes ",
                shapes_str(branches));
  }
  TORCH_CHECK(first.device().is_cpu() || first.device().is_cuda(),
              "lrn_relu_concat: unsupported device ", first.device());
}

namespace {

std::vector<int64_t> output_shape(const std::vector<at::Tensor>& branches) {
  int64_t channels = 0;
  for (const auto& b : branches) channels += b.size(1);
  const at::Tensor& f = branches[0];
  return {f.size(0), channels, f.size(2), f.size(3)};
}

void check_out(const std::vector<at::Tensor>& branches, const at::Tensor& out) {
  const auto expected = output_shape(branches);
  TORCH_CHECK(out.sizes() == at::IntArrayRef(expected), "lrn_relu_concat: out must have shape ",
              at::IntArrayRef(expected), " for branches ", shapes_str(branches), ", got ",
              shape_str(out));
  TORCH_CHECK(out.scalar_type() == branches[0].scalar_type(), "lrn_relu_concat: out has dtype ",
              out.scalar_type(), " but the branches are ", branches[0].scalar_type());
  TORCH_CHECK(out.device() == branches[0].device(), "lrn_relu_concat: out is on ", out.device(),
              " but the branches are on ", branches[0].device());
  TORCH_CHECK(at::has_internal_overlap(out) != at::MemOverlap::Yes,
              "lrn_relu_concat: out of shape ", shape_str(out),
              " has elements that share memory (e.g. an expanded tensor)");
  for (size_t i = 0; i < branches.size(); ++i) {
    TORCH_CHECK(!may_share_memory(out, branches[i]), "lrn_relu_concat: out of shape ",
                shape_str(out), " overlaps the memory of branch ", i, " of shape ",
                shape_str(branches[i]));
  }
}

// ------------------------------------------------------------------------------------------
// CPU kernel

template <typename acc_t>
struct Norm {
  acc_t k, alpha_over_size, beta;
  acc_t lower;  // 0 for the ReLU, -inf without it: one branch-free clamp either way
  // max(a * (k + alpha/size * s) ** -beta, lower); beta = 0.75 (the network's) avoids pow, so
  // the loop vectorizes. NaN stays NaN: (NaN < lower) is false.
  template <bool kBeta075>
  inline acc_t apply(acc_t a, acc_t s) const {
    const acc_t d = k + alpha_over_size * s;
    acc_t scale;
    if constexpr (kBeta075) {
      const acc_t r = std::sqrt(d);
      scale = acc_t(1) / (r * std::sqrt(r));
    } else {
      scale = std::pow(d, -beta);
    }
    const acc_t y = a * scale;
    return y < lower ? lower : y;
  }
};

template <typename scalar_t, typename acc_t, bool kBeta075>
void normalize_run(const acc_t* sum, const scalar_t* x, acc_t bias, scalar_t* out, int64_t n,
                   const Norm<acc_t>& norm) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<scalar_t>(
        norm.template apply<kBeta075>(static_cast<acc_t>(x[i]) + bias, sum[i]));
  }
}

constexpr int64_t kPixelChunk = 1024;  // pixels per task in the planar layout: fits in L1

// Planar: a task is (n, output channel, chunk of pixels); channel planes are contiguous.
template <typename scalar_t, typename acc_t, bool kBeta075>
void planar_kernel(const std::vector<at::Tensor>& branches, const std::vector<acc_t>& bias,
                   const at::Tensor& out, const LrnParams& p, const Norm<acc_t>& norm) {
  const int64_t N = out.size(0), C = out.size(1), HW = out.size(2) * out.size(3);
  const int64_t chunks = (HW + kPixelChunk - 1) / kPixelChunk;
  std::vector<int64_t> branch_of(C), local(C);
  for (int64_t i = 0, c = 0; i < (int64_t)branches.size(); ++i) {
    for (int64_t j = 0; j < branches[i].size(1); ++j, ++c) {
      branch_of[c] = i;
      local[c] = j;
    }
  }
  scalar_t* out_ptr = out.data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, std::min(HW, kPixelChunk)));
  at::parallel_for(0, N * C * chunks, grain, [&](int64_t begin, int64_t end) {
    acc_t sum[kPixelChunk];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task % chunks, c = (task / chunks) % C, n = task / (chunks * C);
      const at::Tensor& b = branches[branch_of[c]];
      const int64_t Cb = b.size(1), j = local[c];
      const int64_t p0 = chunk * kPixelChunk, len = std::min(kPixelChunk, HW - p0);
      const scalar_t* base = b.const_data_ptr<scalar_t>() + n * b.stride(0) + p0;
      const int64_t lo = std::max<int64_t>(0, j - p.size / 2);
      const int64_t hi = std::min<int64_t>(Cb - 1, j + (p.size - 1) / 2);
      const acc_t* branch_bias = bias.data() + (c - j);
      std::fill(sum, sum + len, acc_t(0));
      for (int64_t w = lo; w <= hi; ++w) {
        const scalar_t* plane = base + w * b.stride(1);
        const acc_t bw = branch_bias[w];
        for (int64_t i = 0; i < len; ++i) {
          const acc_t v = static_cast<acc_t>(plane[i]) + bw;
          sum[i] += v * v;
        }
      }
      scalar_t* dst = out_ptr + n * out.stride(0) + c * out.stride(1) + p0;
      normalize_run<scalar_t, acc_t, kBeta075>(sum, base + j * b.stride(1), branch_bias[j], dst,
                                               len, norm);
    }
  });
}

// Channels-last branches: a task is a block of kBlock pixels of one image; each branch's
// channels are contiguous at a pixel. A channels-last `out` is written pixel by pixel; a planar
// one (an NCHW module output) gets the block staged as [pixel][channel] and stored plane by
// plane, kBlock contiguous values per channel: an NCHW output costs no conversion pass.
template <typename scalar_t, typename acc_t, bool kBeta075, int64_t kSize>
void channels_last_kernel(const std::vector<at::Tensor>& branches, const std::vector<acc_t>& bias,
                          const at::Tensor& out, const LrnParams& p, const Norm<acc_t>& norm) {
  constexpr int64_t kBlock = 16;
  const int64_t N = out.size(0), C = out.size(1), HW = out.size(2) * out.size(3);
  const int64_t blocks = (HW + kBlock - 1) / kBlock;
  int64_t max_c = 0;
  for (const auto& b : branches) max_c = std::max(max_c, b.size(1));
  const int64_t before = p.size / 2, after = (p.size - 1) / 2;
  const bool staged = !is_channels_last_like(out);
  const int64_t out_ps = staged ? 1 : *pixel_stride(out);
  scalar_t* out_ptr = out.data_ptr<scalar_t>();
  struct View {
    const scalar_t* data;
    const acc_t* bias;
    int64_t image_stride, pixel_stride, channels;
  };
  std::vector<View> views;
  for (int64_t i = 0, c = 0; i < (int64_t)branches.size(); c += branches[i].size(1), ++i) {
    const at::Tensor& b = branches[i];
    views.push_back({b.const_data_ptr<scalar_t>(), bias.data() + c, b.stride(0),
                     *pixel_stride(b), b.size(1)});
  }
  const bool estimated = estimates_apply(p);
  at::parallel_for(0, N * blocks, std::max<int64_t>(1, 1024 / std::max<int64_t>(1, C)),
                   [&](int64_t begin, int64_t end) {
    // padded[before + c] = a_c^2, zeros on both sides, so every window is a plain sum.
    std::vector<acc_t> padded(max_c + before + after, acc_t(0));
    std::vector<scalar_t> stage(staged ? kBlock * C : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, px0 = (task % blocks) * kBlock;
      const int64_t P = std::min(kBlock, HW - px0);
      for (int64_t q = 0; q < P; ++q) {
        const int64_t px = px0 + q;
        scalar_t* dst = staged ? stage.data() + q * C
                               : out_ptr + n * out.stride(0) + px * out_ps;
        for (const View& b : views) {
          const int64_t Cb = b.channels;
          const scalar_t* src = b.data + n * b.image_stride + px * b.pixel_stride;
          acc_t* sq = padded.data();
          for (int64_t c = 0; c < Cb; ++c) {
            const acc_t v = static_cast<acc_t>(src[c]) + b.bias[c];
            sq[before + c] = v * v;
          }
          std::fill(sq + before + Cb, sq + before + Cb + after, acc_t(0));
          // One pass: window sum and normalization per channel. A compile-time window (the
          // network's 5) lets the compiler unroll the sum and vectorize over channels.
          const int64_t size = kSize > 0 ? kSize : p.size;
#if defined(__AVX512F__)
          if constexpr (std::is_same_v<scalar_t, float> && kBeta075 && kSize > 0) {
            if (estimated) {  // the same pass, 16 channels at a time, d^-3/4 estimated
              const __m512 k = _mm512_set1_ps(norm.k), aos = _mm512_set1_ps(norm.alpha_over_size);
              const __m512 lower = _mm512_set1_ps(norm.lower);
              for (int64_t c = 0; c < Cb; c += 16) {
                const __mmask16 m = Cb - c >= 16 ? 0xFFFF : (1u << (Cb - c)) - 1;
                __m512 w = _mm512_maskz_loadu_ps(m, sq + c);
                for (int64_t t = 1; t < kSize; ++t) {
                  w = _mm512_add_ps(w, _mm512_maskz_loadu_ps(m, sq + c + t));
                }
                __m512 scale, inv_d;
                pow_neg075(_mm512_fmadd_ps(aos, w, k), scale, inv_d);
                const __m512 a = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + c),
                                               _mm512_maskz_loadu_ps(m, b.bias + c));
                // max(lower, y): vmaxps returns its second operand where one is NaN.
                _mm512_mask_storeu_ps(dst + c, m, _mm512_max_ps(lower, _mm512_mul_ps(a, scale)));
              }
              dst += Cb;
              continue;
            }
          }
#endif
          for (int64_t c = 0; c < Cb; ++c) {
            acc_t s = acc_t(0);
            for (int64_t t = 0; t < size; ++t) s += sq[c + t];
            dst[c] = static_cast<scalar_t>(
                norm.template apply<kBeta075>(static_cast<acc_t>(src[c]) + b.bias[c], s));
          }
          dst += Cb;
        }
      }
      if (staged) {
        scalar_t* plane = out_ptr + n * out.stride(0) + px0;
        for (int64_t c = 0; c < C; ++c, plane += out.stride(1)) {
          for (int64_t q = 0; q < P; ++q) plane[q] = stage[q * C + c];
        }
      }
    }
  });
}

}  // namespace

void lrn_relu_concat_cpu_kernel(const std::vector<at::Tensor>& branches_in,
                                const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                const LrnParams& p) {
  // Channels-last branches are read in place for a channels-last out, and for a planar one
  // too (the kernel stores transposed); a planar out of planar branches runs planar.
  const bool cl_branches =
      std::all_of(branches_in.begin(), branches_in.end(), is_channels_last_like) &&
      !std::all_of(branches_in.begin(), branches_in.end(), is_planar);
  const bool out_cl = !is_planar(out) && out.stride(1) == 1 && pixel_stride(out).has_value();
  const bool planar = is_planar(out) && !cl_branches;
  const bool channels_last = out_cl || (is_planar(out) && cl_branches);
  if (!planar && !channels_last) {
    // An output whose pixels cannot be walked as one axis: compute densely, then copy.
    at::Tensor dense = at::empty(out.sizes(), out.options());
    lrn_relu_concat_cpu_kernel(branches_in, biases, dense, p);
    out.copy_(dense);
    return;
  }
  std::vector<at::Tensor> branches;
  branches.reserve(branches_in.size());
  for (const auto& b : branches_in) {
    if (planar) {
      branches.push_back(is_planar(b) ? b : b.contiguous());
    } else {
      branches.push_back(is_channels_last_like(b) ? b : b.contiguous(at::MemoryFormat::ChannelsLast));
    }
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "lrn_relu_concat_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const Norm<acc_t> norm{static_cast<acc_t>(p.k), static_cast<acc_t>(p.alpha / p.size),
                           static_cast<acc_t>(p.beta),
                           p.relu ? acc_t(0) : -std::numeric_limits<acc_t>::infinity()};
    const bool beta075 = p.beta == 0.75;
    const std::vector<acc_t> bias = channel_biases<scalar_t, acc_t>(biases, out.size(1));
    if (planar) {
      beta075 ? planar_kernel<scalar_t, acc_t, true>(branches, bias, out, p, norm)
              : planar_kernel<scalar_t, acc_t, false>(branches, bias, out, p, norm);
    } else {
      // The network's window (5) is a compile-time constant; other sizes take the generic loop.
      if (p.size == 5) {
        beta075 ? channels_last_kernel<scalar_t, acc_t, true, 5>(branches, bias, out, p, norm)
                : channels_last_kernel<scalar_t, acc_t, false, 5>(branches, bias, out, p, norm);
      } else {
        beta075 ? channels_last_kernel<scalar_t, acc_t, true, 0>(branches, bias, out, p, norm)
                : channels_last_kernel<scalar_t, acc_t, false, 0>(branches, bias, out, p, norm);
      }
    }
  });
}

// The biases as the kernels take them: none, or one contiguous 1-D tensor per branch.
std::vector<at::Tensor> check_biases(const std::vector<at::Tensor>& branches,
                                     const std::optional<at::TensorList>& bias) {
  if (!bias.has_value()) return {};
  TORCH_CHECK(bias->size() == branches.size(), "lrn_relu_concat: expected one bias per branch (",
              branches.size(), "), got ", bias->size());
  std::vector<at::Tensor> biases;
  for (size_t i = 0; i < branches.size(); ++i) {
    const at::Tensor& b = (*bias)[i];
    TORCH_CHECK(b.dim() == 1 && b.size(0) == branches[i].size(1), "lrn_relu_concat: bias ", i,
                " must have shape [", branches[i].size(1), "] (the channels of branch ", i,
                " of shape ", shape_str(branches[i]), "), got ", shape_str(b));
    TORCH_CHECK(b.scalar_type() == branches[i].scalar_type() && b.device() == branches[i].device(),
                "lrn_relu_concat: bias ", i, " is ", b.scalar_type(), " on ", b.device(),
                ", its branch ", branches[i].scalar_type(), " on ", branches[i].device());
    biases.push_back(b.contiguous());
  }
  return biases;
}

namespace {

void run_kernel(const std::vector<at::Tensor>& branches, const std::vector<at::Tensor>& biases,
                const at::Tensor& out, const LrnParams& p) {
  if (out.numel() == 0) return;
  if (out.is_cuda()) {
#ifdef WITH_CUDA
    lrn_relu_concat_cuda_kernel(branches, biases, out, p);
#else
    TORCH_CHECK(false, "lrn_relu_concat: this build of googlenet_fused._C has no CUDA kernels");
#endif
  } else {
    lrn_relu_concat_cpu_kernel(branches, biases, out, p);
  }
}

at::Tensor lrn_relu_concat(at::TensorList branches_list, int64_t size, double alpha, double beta,
                           double k, bool relu, std::optional<at::TensorList> bias) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  check_lrn_args(branches, p);
  const std::vector<at::Tensor> biases = check_biases(branches, bias);
  at::Tensor out = at::empty(output_shape(branches), branches[0].options(),
                             output_format(branches[0]));
  run_kernel(branches, biases, out, p);
  return out;
}

void lrn_relu_concat_into(const at::Tensor& out, at::TensorList branches_list, int64_t size,
                          double alpha, double beta, double k, bool relu,
                          std::optional<at::TensorList> bias) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  check_lrn_args(branches, p);
  const std::vector<at::Tensor> biases = check_biases(branches, bias);
  check_out(branches, out);
  run_kernel(branches, biases, out, p);
}

// Test-only: the CUDA kernel's launch emulated on CPU tensors, after the same checks.
void lrn_relu_concat_cuda_emulated_into(const at::Tensor& out, at::TensorList branches_list,
                                        int64_t size, double alpha, double beta, double k,
                                        bool relu, std::optional<at::TensorList> bias) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  check_lrn_args(branches, p);
  const std::vector<at::Tensor> biases = check_biases(branches, bias);
  check_out(branches, out);
  TORCH_CHECK(out.is_cpu(), "_lrn_relu_concat_cuda_emulated_into: emulation runs on CPU tensors");
  if (out.numel() > 0) lrn_relu_concat_cuda_emulated(branches, biases, out, p);
}

}  // namespace
}  // namespace googlenet_fused

TORCH_LIBRARY(googlenet_fused, m) {
  // bias: one per branch, added before the LRN (the convolution before it then runs without).
  m.def("lrn_relu_concat(Tensor[] branches, int size=5, float alpha=0.001, float beta=0.75, "
        "float k=2.0, bool relu=True, Tensor[]? bias=None) -> Tensor");
  // Writes into `output` (any strides, e.g. a channel slice of a module's output). Not named
  // `out`: torch.compile refuses non-contiguous out= arguments.
  m.def("lrn_relu_concat_into(Tensor(a!) output, Tensor[] branches, int size=5, "
        "float alpha=0.001, float beta=0.75, float k=2.0, bool relu=True, "
        "Tensor[]? bias=None) -> ()");
  m.def("_lrn_relu_concat_cuda_emulated_into(Tensor(a!) output, Tensor[] branches, int size, "
        "float alpha, float beta, float k, bool relu, Tensor[]? bias=None) -> ()");
}

// One implementation for both devices: it validates, then picks the device's kernel.
TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("lrn_relu_concat", &googlenet_fused::lrn_relu_concat);
  m.impl("lrn_relu_concat_into", &googlenet_fused::lrn_relu_concat_into);
  m.impl("_lrn_relu_concat_cuda_emulated_into",
         &googlenet_fused::lrn_relu_concat_cuda_emulated_into);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(googlenet_fused, CUDA, m) {
  m.impl("lrn_relu_concat", &googlenet_fused::lrn_relu_concat);
  m.impl("lrn_relu_concat_into", &googlenet_fused::lrn_relu_concat_into);
}
#endif
