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
// CPU: a task is one branch at a block of kPixels pixels of one image; its inputs and the
// output gradient are gathered channel-major into small buffers (contiguous over the pixels, so
// the arithmetic vectorizes whatever the layout), and the gradient is scattered back.
#include "lrn_relu_concat.h"
#include "layout.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

namespace googlenet_fused {
namespace {

constexpr int64_t kPixels = 16;

// Element offsets of a block's pixels in a 4-D tensor, worked out once per block.
struct Block {
  const int64_t* pixel;  // [kPixels] offsets of the pixels (H and W strides)
  int64_t image, channel;
};

void pixel_offsets(const at::Tensor& t, int64_t p0, int64_t P, int64_t* out) {
  const int64_t width = t.size(3);
  for (int64_t q = 0; q < P; ++q) {
    out[q] = ((p0 + q) / width) * t.stride(2) + ((p0 + q) % width) * t.stride(3);
  }
}

template <typename scalar_t, typename acc_t, bool kBeta075>
void backward_branch_block(const scalar_t* a_ptr, const Block& a_at, const acc_t* bias,
                           const scalar_t* g_ptr, const Block& g_at, scalar_t* out_ptr,
                           const Block& out_at, int64_t C, int64_t P, const LrnParams& p,
                           acc_t* buf) {
  acc_t* A = buf;                   // a
  acc_t* G = A + C * kPixels;       // g, then g s (masked)
  acc_t* T = G + C * kPixels;       // g a s / d (masked)
  acc_t* S = T + C * kPixels;       // a^2
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* a_c = a_ptr + a_at.image + c * a_at.channel;
    const scalar_t* g_c = g_ptr + g_at.image + c * g_at.channel;
    for (int64_t q = 0; q < kPixels; ++q) {  // pixels past P: zeros, never stored
      const bool in = q < P;
      A[c * kPixels + q] = in ? static_cast<acc_t>(a_c[a_at.pixel[q]]) + bias[c] : acc_t(0);
      G[c * kPixels + q] = in ? static_cast<acc_t>(g_c[g_at.pixel[q]]) : acc_t(0);
    }
    for (int64_t q = 0; q < kPixels; ++q) S[c * kPixels + q] = A[c * kPixels + q] * A[c * kPixels + q];
  }
  const int64_t before = p.size / 2, after = (p.size - 1) / 2;
  const acc_t k = static_cast<acc_t>(p.k), aos = static_cast<acc_t>(p.alpha / p.size);
  const acc_t beta = static_cast<acc_t>(p.beta);
  const acc_t coef = static_cast<acc_t>(2.0 * p.alpha * p.beta / p.size);
  acc_t window[kPixels];
  for (int64_t c = 0; c < C; ++c) {
    const int64_t lo = std::max<int64_t>(0, c - before), hi = std::min<int64_t>(C - 1, c + after);
    std::fill(window, window + kPixels, acc_t(0));
    for (int64_t j = lo; j <= hi; ++j) {
      for (int64_t q = 0; q < kPixels; ++q) window[q] += S[j * kPixels + q];
    }
    for (int64_t q = 0; q < kPixels; ++q) {
      const acc_t d = k + aos * window[q];
      acc_t s;
      if constexpr (kBeta075) {
        const acc_t r = std::sqrt(d);
        s = acc_t(1) / (r * std::sqrt(r));
      } else {
        s = std::pow(d, -beta);
      }
      const acc_t a = A[c * kPixels + q];
      // The ReLU passes the gradient where y = a s > 0 (NaN and 0 stop it, as in PyTorch).
      const acc_t g = (p.relu && !(a * s > acc_t(0))) ? acc_t(0) : G[c * kPixels + q];
      T[c * kPixels + q] = g * a * s / d;
      G[c * kPixels + q] = g * s;
    }
  }
  for (int64_t i = 0; i < C; ++i) {
    const int64_t lo = std::max<int64_t>(0, i - after), hi = std::min<int64_t>(C - 1, i + before);
    std::fill(window, window + kPixels, acc_t(0));
    for (int64_t c = lo; c <= hi; ++c) {
      for (int64_t q = 0; q < kPixels; ++q) window[q] += T[c * kPixels + q];
    }
    scalar_t* out_i = out_ptr + out_at.image + i * out_at.channel;
    for (int64_t q = 0; q < P; ++q) {
      out_i[out_at.pixel[q]] =
          static_cast<scalar_t>(G[i * kPixels + q] - coef * A[i * kPixels + q] * window[q]);
    }
  }
}

void backward_cpu_kernel(const at::Tensor& grad_out, const std::vector<at::Tensor>& branches,
                         const std::vector<at::Tensor>& biases,
                         const std::vector<at::Tensor>& grads, const LrnParams& p) {
  const int64_t N = grad_out.size(0), HW = grad_out.size(2) * grad_out.size(3);
  const int64_t blocks = (HW + kPixels - 1) / kPixels;
  int64_t max_c = 1;
  for (const auto& b : branches) max_c = std::max(max_c, b.size(1));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "lrn_relu_concat_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    std::vector<std::vector<acc_t>> bias(branches.size());
    std::vector<int64_t> offsets;
    int64_t offset = 0;
    for (size_t i = 0; i < branches.size(); ++i) {
      bias[i].assign(branches[i].size(1), acc_t(0));
      if (!biases.empty()) {
        const scalar_t* b = biases[i].const_data_ptr<scalar_t>();
        for (int64_t c = 0; c < branches[i].size(1); ++c) bias[i][c] = static_cast<acc_t>(b[c]);
      }
      offsets.push_back(offset);
      offset += branches[i].size(1);
    }
    const int64_t nb = static_cast<int64_t>(branches.size());
    const bool beta075 = p.beta == 0.75;
    at::parallel_for(0, N * blocks * nb, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(4 * max_c * kPixels);
      int64_t pa[kPixels], pg[kPixels], po[kPixels];
      for (int64_t task = begin; task < end; ++task) {
        const int64_t i = task % nb, block = (task / nb) % blocks, n = task / (nb * blocks);
        const int64_t p0 = block * kPixels, P = std::min(kPixels, HW - p0);
        const at::Tensor& b = branches[i];
        pixel_offsets(b, p0, P, pa);
        pixel_offsets(grad_out, p0, P, pg);
        pixel_offsets(grads[i], p0, P, po);
        const Block a_at{pa, n * b.stride(0), b.stride(1)};
        const Block g_at{pg, n * grad_out.stride(0) + offsets[i] * grad_out.stride(1),
                         grad_out.stride(1)};
        const Block o_at{po, n * grads[i].stride(0), grads[i].stride(1)};
        auto run = [&](auto beta_is_075) {
          backward_branch_block<scalar_t, acc_t, decltype(beta_is_075)::value>(
              b.const_data_ptr<scalar_t>(), a_at, bias[i].data(),
              grad_out.const_data_ptr<scalar_t>(), g_at, grads[i].data_ptr<scalar_t>(), o_at,
              b.size(1), P, p, buf.data());
        };
        beta075 ? run(std::true_type{}) : run(std::false_type{});
      }
    });
  });
}

std::vector<at::Tensor> backward_impl(const at::Tensor& grad_out, at::TensorList branches_list,
                                      int64_t size, double alpha, double beta, double k,
                                      bool relu, const std::optional<at::TensorList>& bias,
                                      bool emulate_cuda) {
  const std::vector<at::Tensor> branches = branches_list.vec();
  const LrnParams p{size, alpha, beta, k, relu};
  check_lrn_args(branches, p);
  const std::vector<at::Tensor> biases = check_biases(branches, bias);
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
  std::vector<at::Tensor> grads;
  for (const auto& b : branches) {
    grads.push_back(at::empty(b.sizes(), b.options(), output_format(b)));
  }
  if (grad_out.numel() == 0) return grads;
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
  return grads;
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

}  // namespace
}  // namespace googlenet_fused

TORCH_LIBRARY_FRAGMENT(googlenet_fused, m) {
  // The gradient of lrn_relu_concat w.r.t. each branch (and so each bias: its sum over N, H, W).
  m.def("lrn_relu_concat_backward(Tensor grad_out, Tensor[] branches, int size, float alpha, "
        "float beta, float k, bool relu, Tensor[]? bias=None) -> Tensor[]");
  m.def("_lrn_relu_concat_backward_cuda_emulated(Tensor grad_out, Tensor[] branches, int size, "
        "float alpha, float beta, float k, bool relu, Tensor[]? bias=None) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("lrn_relu_concat_backward", &googlenet_fused::lrn_relu_concat_backward);
  m.impl("_lrn_relu_concat_backward_cuda_emulated",
         &googlenet_fused::lrn_relu_concat_backward_cuda_emulated_op);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(googlenet_fused, CUDA, m) {
  m.impl("lrn_relu_concat_backward", &googlenet_fused::lrn_relu_concat_backward);
}
#endif
