// CUDA kernel of lrn_relu_concat_backward: the gradient of every branch in one launch (up to
// kMaxBranches; more take more launches). The work of each thread is
// lrn_thread::run_backward_thread (lrn_relu_concat_backward_thread.h), which a CPU op also
// runs over this launch's grid in the tests.
#include "lrn_relu_concat.h"
#include "lrn_relu_concat_backward_thread.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace googlenet_fused {
namespace {

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(lrn_thread::kThreads) lrn_relu_concat_backward_kernel(
    const lrn_thread::BackwardArgs<index_t, lrn_thread::acc_of<scalar_t>> args) {
  lrn_thread::run_backward_thread<scalar_t, index_t>(args, blockIdx.x, blockIdx.y, threadIdx.x);
}

template <typename scalar_t, typename index_t>
void launch_all(const at::Tensor& grad_out, const std::vector<at::Tensor>& branches,
                const std::vector<at::Tensor>& biases, const std::vector<at::Tensor>& grads,
                const LrnParams& p, cudaStream_t stream) {
  lrn_thread::for_each_backward_launch<scalar_t, index_t>(
      grad_out, branches, biases, grads, p,
      [&](const auto& args, uint32_t blocks_x, uint32_t blocks_y) {
        lrn_relu_concat_backward_kernel<scalar_t, index_t>
            <<<dim3(blocks_x, blocks_y), lrn_thread::kThreads, 0, stream>>>(args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

void lrn_relu_concat_backward_cuda_kernel(const at::Tensor& grad_out,
                                          const std::vector<at::Tensor>& branches,
                                          const std::vector<at::Tensor>& biases,
                                          const std::vector<at::Tensor>& grads,
                                          const LrnParams& p) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool int32 = lrn_thread::backward_fits_int32(grad_out, branches, grads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "lrn_relu_concat_backward_cuda", [&] {
    if (int32) {
      launch_all<scalar_t, int32_t>(grad_out, branches, biases, grads, p, stream);
    } else {
      launch_all<scalar_t, int64_t>(grad_out, branches, biases, grads, p, stream);
    }
  });
}

}  // namespace googlenet_fused
