// CUDA kernel of lrn_relu_concat: every branch in one launch, one thread per output element.
//
// Threads are ordered like the output's memory (NCHW: pixels fastest; channels_last: channels
// fastest), so stores are coalesced, and so are the loads of the LRN window when the branches
// share the output's layout. Each thread reads its `size` window neighbours (cache hits for the
// threads of the neighbouring channels), accumulates in fp32 (fp64 for double), and writes one
// value. Branches are passed by value in a small table; more than kMaxBranches take more launches.
#include "lrn_relu_concat.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>
#include <type_traits>

namespace googlenet_fused {
namespace {

constexpr int kMaxBranches = 8;
constexpr int kThreads = 256;

struct Branch {
  const void* data;
  int64_t stride_n, stride_c, stride_h, stride_w;
  int64_t channels;
  int64_t offset;  // first channel of this branch in the output
};

struct BranchTable {
  Branch b[kMaxBranches];
  int count;
};

template <typename scalar_t, typename acc_t>
__global__ void lrn_relu_concat_kernel(BranchTable table, scalar_t* __restrict__ out,
                                       int64_t out_sn, int64_t out_sc, int64_t out_sh,
                                       int64_t out_sw, int64_t N, int64_t C, int64_t H, int64_t W,
                                       bool channels_last, int64_t size, acc_t k,
                                       acc_t alpha_over_size, acc_t beta, acc_t lower) {
  const int64_t total = N * C * H * W;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    int64_t n, c, h, w, rest;
    if (channels_last) {
      c = idx % C; rest = idx / C; w = rest % W; rest /= W; h = rest % H; n = rest / H;
    } else {
      w = idx % W; rest = idx / W; h = rest % H; rest /= H; c = rest % C; n = rest / C;
    }
    int i = 0;
    while (i + 1 < table.count && c >= table.b[i + 1].offset) ++i;
    const Branch& br = table.b[i];
    const int64_t j = c - br.offset;
    const scalar_t* base = static_cast<const scalar_t*>(br.data) + n * br.stride_n +
                           h * br.stride_h + w * br.stride_w;
    const int64_t lo = j - size / 2 > 0 ? j - size / 2 : 0;
    const int64_t hi = j + (size - 1) / 2 < br.channels - 1 ? j + (size - 1) / 2 : br.channels - 1;
    acc_t sum = 0;
    for (int64_t t = lo; t <= hi; ++t) {
      const acc_t v = static_cast<acc_t>(base[t * br.stride_c]);
      sum += v * v;
    }
    const acc_t a = static_cast<acc_t>(base[j * br.stride_c]);
    const acc_t y = a * pow(k + alpha_over_size * sum, -beta);
    out[n * out_sn + c * out_sc + h * out_sh + w * out_sw] =
        static_cast<scalar_t>(y < lower ? lower : y);  // NaN stays NaN
  }
}

}  // namespace

void lrn_relu_concat_cuda_kernel(const std::vector<at::Tensor>& branches, const at::Tensor& out,
                                 const LrnParams& p) {
  const c10::cuda::CUDAGuard guard(out.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t N = out.size(0), H = out.size(2), W = out.size(3);
  // Order threads like the output's memory: channels fastest when its channel stride is 1.
  const bool channels_last = out.size(1) > 1 && out.stride(1) == 1 && H * W > 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "lrn_relu_concat_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    int64_t first_channel = 0;
    for (size_t start = 0; start < branches.size(); start += kMaxBranches) {
      BranchTable table{};
      table.count = static_cast<int>(std::min<size_t>(kMaxBranches, branches.size() - start));
      int64_t channels = 0;
      for (int i = 0; i < table.count; ++i) {
        const at::Tensor& b = branches[start + i];
        table.b[i] = Branch{b.const_data_ptr(), b.stride(0), b.stride(1), b.stride(2), b.stride(3),
                            b.size(1), channels};
        channels += b.size(1);
      }
      const at::Tensor dst = out.narrow(1, first_channel, channels);
      first_channel += channels;
      const int64_t total = N * channels * H * W;
      const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, int64_t(1) << 20);
      lrn_relu_concat_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
          table, dst.data_ptr<scalar_t>(), dst.stride(0), dst.stride(1), dst.stride(2),
          dst.stride(3), N, channels, H, W, channels_last, p.size, static_cast<acc_t>(p.k),
          static_cast<acc_t>(p.alpha / p.size), static_cast<acc_t>(p.beta),
          p.relu ? acc_t(0) : -std::numeric_limits<acc_t>::infinity());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace googlenet_fused
