// CUDA kernel of lrn_relu_concat: every branch in one launch (up to kMaxBranches; more take
// more launches). The work of each thread is lrn_thread::run_thread (lrn_relu_concat_thread.h),
// which a CPU op also runs over this launch's grid in the tests.
#include "lrn_relu_concat.h"
#include "lrn_relu_concat_thread.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace googlenet_fused {
namespace {

template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(lrn_thread::kThreads)
    lrn_relu_concat_kernel(const lrn_thread::Args<index_t, lrn_thread::acc_of<scalar_t>> args) {
  lrn_thread::run_thread<scalar_t, index_t>(args, blockIdx.x, blockIdx.y, threadIdx.x);
}

template <typename scalar_t, typename index_t>
void launch_all(const std::vector<at::Tensor>& branches, const std::vector<at::Tensor>& biases,
                const at::Tensor& out, const LrnParams& p, cudaStream_t stream) {
  lrn_thread::for_each_launch<scalar_t, index_t>(
      branches, biases, out, p, [&](const auto& args, uint32_t blocks_x, uint32_t blocks_y) {
        lrn_relu_concat_kernel<scalar_t, index_t>
            <<<dim3(blocks_x, blocks_y), lrn_thread::kThreads, 0, stream>>>(args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

void lrn_relu_concat_cuda_kernel(const std::vector<at::Tensor>& branches,
                                 const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                 const LrnParams& p) {
  const c10::cuda::CUDAGuard guard(out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool int32 = lrn_thread::fits_int32(branches, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "lrn_relu_concat_cuda", [&] {
    if (int32) {
      launch_all<scalar_t, int32_t>(branches, biases, out, p, stream);
    } else {
      launch_all<scalar_t, int64_t>(branches, biases, out, p, stream);
    }
  });
}

}  // namespace googlenet_fused
