// Fused LocalResponseNorm + ReLU + channel concat: shared declarations of the CPU and CUDA
// kernels. Validation and output allocation live in lrn_relu_concat.cpp; a kernel receives
// branches that agree in N, H, W, dtype and device, an output of shape [N, sum C_i, H, W], and
// either no biases or one contiguous 1-D bias per branch (added before the LRN).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace googlenet_fused {

struct LrnParams {
  int64_t size;  // LRN window, in channels: [c - size/2, c + (size-1)/2], clipped to the branch
  double alpha;
  double beta;
  double k;
  bool relu;  // relu(lrn(a)) when true, plain lrn(a) otherwise
};

// Argument checks shared by the forward and backward ops (lrn_relu_concat.cpp): the branches
// agree in N, H, W, dtype and device; the biases, one [C_i] per branch or none, come back
// contiguous.
void check_lrn_args(const std::vector<at::Tensor>& branches, const LrnParams& p);
std::vector<at::Tensor> check_biases(const std::vector<at::Tensor>& branches,
                                     const std::optional<at::TensorList>& bias);

// Every output channel's bias in the accumulation type, the branches' biases one after the
// other (zeros without biases): what the CPU kernels, forward and backward, add.
template <typename scalar_t, typename acc_t>
std::vector<acc_t> channel_biases(const std::vector<at::Tensor>& biases, int64_t channels) {
  std::vector<acc_t> all(channels, acc_t(0));
  int64_t c = 0;
  for (const auto& b : biases) {
    const scalar_t* data = b.const_data_ptr<scalar_t>();
    for (int64_t j = 0; j < b.numel(); ++j) all[c++] = static_cast<acc_t>(data[j]);
  }
  return all;
}

void lrn_relu_concat_cpu_kernel(const std::vector<at::Tensor>& branches,
                                const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                const LrnParams& p);

// The CUDA launch run on the CPU, thread by thread (tests): see lrn_relu_concat_emulated.cpp.
void lrn_relu_concat_cuda_emulated(const std::vector<at::Tensor>& branches,
                                   const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                   const LrnParams& p);

void lrn_relu_concat_backward_cuda_emulated(const at::Tensor& grad_out,
                                            const std::vector<at::Tensor>& branches,
                                            const std::vector<at::Tensor>& biases,
                                            const std::vector<at::Tensor>& grads,
                                            const LrnParams& p);

#ifdef WITH_CUDA
void lrn_relu_concat_backward_cuda_kernel(const at::Tensor& grad_out,
                                          const std::vector<at::Tensor>& branches,
                                          const std::vector<at::Tensor>& biases,
                                          const std::vector<at::Tensor>& grads,
                                          const LrnParams& p);
void lrn_relu_concat_cuda_kernel(const std::vector<at::Tensor>& branches,
                                 const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                 const LrnParams& p);
#endif

}  // namespace googlenet_fused
