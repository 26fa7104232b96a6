// CPU emulation of the CUDA launch of lrn_relu_concat, for tests on machines without a GPU: the
// same launch plan (lrn_thread::for_each_launch: tables, grid, index type, vector flags) and the
// same per-thread function (lrn_thread::run_thread), called for every block and thread index
// the CUDA launch would have. A wrong index or vector condition fails on CPU, not only on a GPU.
#include "lrn_relu_concat.h"
#include "lrn_relu_concat_backward_thread.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

namespace googlenet_fused {

void lrn_relu_concat_cuda_emulated(const std::vector<at::Tensor>& branches,
                                   const std::vector<at::Tensor>& biases, const at::Tensor& out,
                                   const LrnParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "lrn_relu_concat_emulated", [&] {
    auto emulate = [&](const auto& args, uint32_t blocks_x, uint32_t blocks_y) {
      using index_t = std::decay_t<decltype(args.out_n)>;
      at::parallel_for(0, blocks_x, 1, [&](int64_t begin, int64_t end) {
        for (int64_t bx = begin; bx < end; ++bx) {
          for (uint32_t by = 0; by < blocks_y; ++by) {
            for (uint32_t tx = 0; tx < static_cast<uint32_t>(lrn_thread::kThreads); ++tx) {
              lrn_thread::run_thread<scalar_t, index_t>(args, static_cast<uint32_t>(bx), by, tx);
            }
          }
        }
      });
    };
    if (lrn_thread::fits_int32(branches, out)) {
      lrn_thread::for_each_launch<scalar_t, int32_t>(branches, biases, out, p, emulate);
    } else {
      lrn_thread::for_each_launch<scalar_t, int64_t>(branches, biases, out, p, emulate);
    }
  });
}

void lrn_relu_concat_backward_cuda_emulated(const at::Tensor& grad_out,
                                            const std::vector<at::Tensor>& branches,
                                            const std::vector<at::Tensor>& biases,
                                            const std::vector<at::Tensor>& grads,
                                            const LrnParams& p) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_out.scalar_type(), "lrn_relu_concat_backward_emulated", [&] {
    auto emulate = [&](const auto& args, uint32_t blocks_x, uint32_t blocks_y) {
      using index_t = std::decay_t<decltype(args.fwd.out_n)>;
      at::parallel_for(0, blocks_x, 1, [&](int64_t begin, int64_t end) {
        for (int64_t bx = begin; bx < end; ++bx) {
          for (uint32_t by = 0; by < blocks_y; ++by) {
            for (uint32_t tx = 0; tx < static_cast<uint32_t>(lrn_thread::kThreads); ++tx) {
              lrn_thread::run_backward_thread<scalar_t, index_t>(args, static_cast<uint32_t>(bx),
                                                                 by, tx);
            }
          }
        }
      });
    };
    if (lrn_thread::backward_fits_int32(grad_out, branches, grads)) {
      lrn_thread::for_each_backward_launch<scalar_t, int32_t>(grad_out, branches, biases, grads, p,
                                                              emulate);
    } else {
      lrn_thread::for_each_backward_launch<scalar_t, int64_t>(grad_out, branches, biases, grads, p,
                                                              emulate);
    }
  });
}

}  // namespace googlenet_fused
