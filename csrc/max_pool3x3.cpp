// max_pool3x3: the inception pool branch's max pooling (3×3 window, stride 1, padding 1) on CPU.
//
// ATen's CPU max pooling is slow for this shape (PLATFORM.md: 18.9 ms NCHW / 1.9 ms
// channels_last for inception 4a at batch 16) and it dominated the fused module's time after the
// convolutions. Here the pooling is separable, a max over three rows then over three columns
// (max is associative, so the result is exact), and each step is one vectorizable loop over
// contiguous values in either layout.
// Padding never wins (as in ATen, it acts as -inf) and NaN propagates: a window holding NaN gives
// NaN. The output has the input's layout (channels_last stays channels_last). Only the forward
// lives here: the backward routes gradients with ATen's indices (googlenet_fused/ops.py), so ties
// resolve exactly as in torch.nn.functional.max_pool2d.
#include "layout.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace googlenet_fused {
namespace {

// max(m, v) where NaN wins, written so the compiler emits a compare and a blend.
template <typename scalar_t>
inline scalar_t nan_max(scalar_t m, scalar_t v) {
  return (v > m || v != v) ? v : m;
}

template <typename scalar_t>
inline void max_of_three(scalar_t* dst, const scalar_t* a, const scalar_t* b, const scalar_t* c,
                         int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = nan_max(nan_max(a[i], b[i]), c[i]);
}

// Both layouts are walked as "planes" of H rows, each row W pixels of `unit` contiguous values:
// planar, a plane is one channel of one image (unit 1); channels-last, a plane is one image
// (unit C). A task is a band of rows of one plane, long enough that each step is one long loop:
// a max over three rows for the whole band, then a max over three pixels for the whole band,
// then the first and last pixel of each row are redone (the long loop crossed row ends there).
template <typename scalar_t>
void pool_planes(const at::Tensor& x, const at::Tensor& out, bool channels_last) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t unit = channels_last ? C : 1, per_image = channels_last ? 1 : C;
  const int64_t L = W * unit;  // values per row
  const int64_t band = std::clamp<int64_t>(8192 / L, 1, H), bands = (H + band - 1) / band;
  const scalar_t* in = x.const_data_ptr<scalar_t>();
  scalar_t* out_base = out.data_ptr<scalar_t>();
  at::parallel_for(0, N * per_image * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> column_max(band * L);  // max over rows h-1..h+1
    scalar_t* cm = column_max.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / bands, h0 = (task % bands) * band;
      const int64_t h1 = std::min(H, h0 + band), n = plane / per_image, c = plane % per_image;
      const scalar_t* src = in + n * x.stride(0) + c * x.stride(1);
      scalar_t* dst = out_base + n * out.stride(0) + c * out.stride(1) + h0 * L;
      // Rows with both neighbours in one loop; at the top and bottom the row itself stands in
      // for the missing neighbour (padding never wins).
      const int64_t inner0 = std::max<int64_t>(h0, 1), inner1 = std::min(h1, H - 1);
      if (inner1 > inner0) {
        max_of_three(cm + (inner0 - h0) * L, src + (inner0 - 1) * L, src + inner0 * L,
                     src + (inner0 + 1) * L, (inner1 - inner0) * L);
      }
      auto border_row = [&](int64_t h) {
        const scalar_t* mid = src + h * L;
        max_of_three(cm + (h - h0) * L, h > 0 ? mid - L : mid, mid, h + 1 < H ? mid + L : mid, L);
      };
      if (h0 == 0) border_row(0);
      if (h1 == H && H > 1) border_row(H - 1);
      const int64_t rows = h1 - h0;
      if (W == 1) {
        std::copy(cm, cm + rows * L, dst);
        continue;
      }
      max_of_three(dst + unit, cm, cm + unit, cm + 2 * unit, rows * L - 2 * unit);
      for (int64_t r = 0; r < rows; ++r) {
        scalar_t* row_out = dst + r * L;
        const scalar_t* row = cm + r * L;
        max_of_three(row_out, row, row, row + unit, unit);
        max_of_three(row_out + L - unit, row + L - 2 * unit, row + L - unit, row + L - unit, unit);
      }
    }
  });
}

at::Tensor max_pool3x3(const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "max_pool3x3: expected a 4-D [N, C, H, W] input, got shape ",
              shape_str(input));
  TORCH_CHECK(at::isFloatingType(input.scalar_type()),
              "max_pool3x3: expected a floating point input, got ", input.scalar_type());
  TORCH_CHECK(input.device().is_cpu(), "max_pool3x3: this kernel is CPU-only, got an input on ",
              input.device());
  const at::MemoryFormat format = output_format(input);
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  // Rows must be dense (planar: pixel stride 1; channels-last: pixel stride C); anything else
  // is copied once.
  const bool dense = channels_last ? pixel_stride(input) == input.size(1) : is_planar(input);
  const at::Tensor x = dense ? input : input.contiguous(format);
  at::Tensor out = at::empty(x.sizes(), x.options(), format);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool3x3", [&] {
    pool_planes<scalar_t>(x, out, channels_last);
  });
  return out;
}

}  // namespace
}  // namespace googlenet_fused

TORCH_LIBRARY_FRAGMENT(googlenet_fused, m) {
  m.def("max_pool3x3(Tensor input) -> Tensor");
}

TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("max_pool3x3", &googlenet_fused::max_pool3x3);
}
