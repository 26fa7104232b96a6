// max_pool3x3: the inception pool branch's max pooling (3×3 window, stride 1, padding 1) on CPU.
//
// ATen's CPU max pooling is slow for this shape (PLATFORM.md: 18.9 ms NCHW / 1.9 ms
// channels_last for inception 4a at batch 16) and it dominated the fused module's time after the
// convolutions. Here the pooling is separable, a max over three rows then over three columns
// (max is associative, so the result is exact), and each step is one vectorizable loop over
// contiguous values in either layout.
// Padding never wins (as in ATen, it acts as -inf) and NaN propagates: a window holding NaN gives
// NaN. The output has the input's layout (channels_last stays channels_last).
// The backward (max_pool3x3_backward) needs no second pooling pass and no index tensor: it takes
// the forward's output, and each output's gradient goes to the window position ATen's max_pool2d
// would have picked: the first (row-major) value equal to the maximum, or the last NaN when the
// maximum is NaN. So ties resolve exactly as in torch.nn.functional.max_pool2d, without the
// int64 indices ATen would keep (60 MB in a batch-8 network step). Channels-last (what the
// fused modules use) walks contiguous channels directly: 1.0-1.2 ms for a [8, 512, 14, 14]
// input (4b's at batch 8) on 2 cores, where gathering 16-channel blocks took 2.6 ms and ATen's
// recompute with indices plus its backward about 2.1 ms; other layouts gather.
// The network's stride-2 pools (stem, between stages) stay ATen's. A version of these kernels
// with stride, padding and ceil_mode (forward over each output's window directly, 2x ATen's;
// backward taking each window's maximum again, so an in-place ReLU after the pool stays legal)
// took 40-54 ms for the four pools of a batch-8 training step against ATen's 34-43 ms, profiled
// side by side: the backward's per-tap scans cost twice ATen's index scatter when memory is
// warm, and most of the 7-14 ms ATen spends zero-filling its gradient is first-touch page
// faults (about 0.4 ms per MB on this VM) that any freshly allocated gradient pays.
#include "layout.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
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

constexpr int64_t kRouteChannels = 16;

// Other layouts: the gradient of kRouteChannels channels of one image, every array
// [H*W][kRouteChannels] in the accumulation type (gathered, so each loop runs over contiguous
// channels and vectorizes): each output's gradient is added to the first window value equal to
// its maximum (row-major), or to the window's last NaN when the maximum is NaN.
template <typename acc_t>
void route_block(const acc_t* X, const acc_t* M, const acc_t* G, acc_t* acc, int64_t H,
                 int64_t W) {
  constexpr int64_t kC = kRouteChannels;
  std::fill(acc, acc + H * W * kC, acc_t(0));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t w = 0; w < W; ++w) {
      const acc_t* m = M + (h * W + w) * kC;
      const acc_t* g = G + (h * W + w) * kC;
      acc_t done[kC] = {};
      bool any_nan = false;
      for (int64_t c = 0; c < kC; ++c) any_nan |= m[c] != m[c];
      for (int64_t dh = -1; dh <= 1; ++dh) {
        if (h + dh < 0 || h + dh >= H) continue;
        for (int64_t dw = -1; dw <= 1; ++dw) {
          if (w + dw < 0 || w + dw >= W) continue;
          const int64_t pos = ((h + dh) * W + (w + dw)) * kC;
          for (int64_t c = 0; c < kC; ++c) {
            const bool take = X[pos + c] == m[c] && done[c] == acc_t(0);
            acc[pos + c] += take ? g[c] : acc_t(0);
            done[c] = take ? acc_t(1) : done[c];
          }
        }
      }
      if (!any_nan) continue;
      for (int64_t dh = 1; dh >= -1; --dh) {  // the last NaN: scanned backwards, the first found
        if (h + dh < 0 || h + dh >= H) continue;
        for (int64_t dw = 1; dw >= -1; --dw) {
          if (w + dw < 0 || w + dw >= W) continue;
          const int64_t pos = ((h + dh) * W + (w + dw)) * kC;
          for (int64_t c = 0; c < kC; ++c) {
            const bool take = m[c] != m[c] && X[pos + c] != X[pos + c] && done[c] == acc_t(0);
            acc[pos + c] += take ? g[c] : acc_t(0);
            done[c] = take ? acc_t(1) : done[c];
          }
        }
      }
    }
  }
}

constexpr int64_t kRouteBlock = 64;  // channels of one channels-last task

// Channels-last: one task is one image's block of up to kRouteBlock channels, walked pixel by
// pixel over contiguous channels (every loop vectorizes, nothing is gathered). For each output
// pixel, the tap that receives its gradient is found per channel by two scans of its window:
// backwards for the first value equal to the maximum, forwards for the last NaN when the
// maximum is NaN (only where the pixel has one); the gradient is then added to that tap.
template <typename scalar_t, typename acc_t>
void route_channels_last(const at::Tensor& input, const at::Tensor& output,
                         const at::Tensor& grad_out, const at::Tensor& grad) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t blocks = (C + kRouteBlock - 1) / kRouteBlock;
  const int64_t xs = *pixel_stride(input), ms = *pixel_stride(output);
  const int64_t gs = *pixel_stride(grad_out), ds = *pixel_stride(grad);
  const scalar_t* xp = input.const_data_ptr<scalar_t>();
  const scalar_t* mp = output.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  scalar_t* dp = grad.data_ptr<scalar_t>();
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(H * W * kRouteBlock);  // the block's gradient, [pixel][channel]
    acc_t tap_of[kRouteBlock];                      // receiving tap per channel, 0..8
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * kRouteBlock;
      const int64_t nc = std::min(kRouteBlock, C - c0);
      const scalar_t* x = xp + n * input.stride(0) + c0;
      const scalar_t* m_img = mp + n * output.stride(0) + c0;
      const scalar_t* g_img = gp + n * grad_out.stride(0) + c0;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t w = 0; w < W; ++w) {
          const scalar_t* m = m_img + (h * W + w) * ms;
          const scalar_t* g = g_img + (h * W + w) * gs;
          // Taps inside the image, row-major; padding never receives a gradient.
          int64_t pixels[9], taps[9], count = 0;
          for (int64_t dh = -1; dh <= 1; ++dh) {
            for (int64_t dw = -1; dw <= 1; ++dw) {
              if (h + dh < 0 || h + dh >= H || w + dw < 0 || w + dw >= W) continue;
              pixels[count] = (h + dh) * W + (w + dw);
              taps[count++] = (dh + 1) * 3 + (dw + 1);
            }
          }
          std::fill(tap_of, tap_of + nc, acc_t(-1));
          for (int64_t i = count - 1; i >= 0; --i) {  // backwards: the first match wins
            const scalar_t* xq = x + pixels[i] * xs;
            const acc_t t = static_cast<acc_t>(taps[i]);
            for (int64_t c = 0; c < nc; ++c) tap_of[c] = xq[c] == m[c] ? t : tap_of[c];
          }
          int32_t any_nan = 0;  // an int: GCC vectorizes its OR reduction, not a bool's
          for (int64_t c = 0; c < nc; ++c) any_nan |= m[c] != m[c];
          if (any_nan) {
            for (int64_t i = 0; i < count; ++i) {  // forwards: the last NaN wins
              const scalar_t* xq = x + pixels[i] * xs;
              const acc_t t = static_cast<acc_t>(taps[i]);
              for (int64_t c = 0; c < nc; ++c) {
                tap_of[c] = (m[c] != m[c] && xq[c] != xq[c]) ? t : tap_of[c];
              }
            }
          }
          for (int64_t i = 0; i < count; ++i) {
            acc_t* a = acc.data() + pixels[i] * kRouteBlock;
            const acc_t t = static_cast<acc_t>(taps[i]);
            for (int64_t c = 0; c < nc; ++c) {
              a[c] += tap_of[c] == t ? static_cast<acc_t>(g[c]) : acc_t(0);
            }
          }
        }
      }
      scalar_t* d = dp + n * grad.stride(0) + c0;
      for (int64_t q = 0; q < H * W; ++q) {
        const acc_t* a = acc.data() + q * kRouteBlock;
        for (int64_t c = 0; c < nc; ++c) d[q * ds + c] = static_cast<scalar_t>(a[c]);
      }
    }
  });
}

at::Tensor max_pool3x3_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                const at::Tensor& output) {
  TORCH_CHECK(input.dim() == 4 && grad_out.sizes() == input.sizes() &&
                  output.sizes() == input.sizes(),
              "max_pool3x3_backward: grad_out ", shape_str(grad_out), ", input ",
              shape_str(input), " and output ", shape_str(output), " must share one 4-D shape");
  TORCH_CHECK(input.device().is_cpu(), "max_pool3x3_backward: this kernel is CPU-only");
  at::Tensor grad = at::empty(input.sizes(), input.options(), output_format(input));
  if (grad.numel() == 0) return grad;
  if (output_format(input) == at::MemoryFormat::ChannelsLast && is_channels_last_like(input) &&
      is_channels_last_like(output) && is_channels_last_like(grad_out)) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool3x3_backward", [&] {
      using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      route_channels_last<scalar_t, acc_t>(input, output, grad_out, grad);
    });
    return grad;
  }
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  constexpr int64_t kC = kRouteChannels;
  const int64_t blocks = (C + kC - 1) / kC;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "max_pool3x3_backward", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const scalar_t* xp = input.const_data_ptr<scalar_t>();
    const scalar_t* op = output.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    scalar_t* dp = grad.data_ptr<scalar_t>();
    at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(4 * H * W * kC);
      acc_t *X = buf.data(), *M = X + H * W * kC, *G = M + H * W * kC, *acc = G + H * W * kC;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t n = task / blocks, c0 = (task % blocks) * kC, nc = std::min(kC, C - c0);
        // Gather: arrays [pixel][channel]; channels past C are zeros and never stored.
        auto gather = [&](const scalar_t* src, const at::Tensor& t, acc_t* dst) {
          const int64_t sc = t.stride(1), sh = t.stride(2), sw = t.stride(3);
          src += n * t.stride(0) + c0 * sc;
          for (int64_t h = 0; h < H; ++h) {
            for (int64_t w = 0; w < W; ++w) {
              const scalar_t* px = src + h * sh + w * sw;
              acc_t* d = dst + (h * W + w) * kC;
              for (int64_t c = 0; c < nc; ++c) d[c] = static_cast<acc_t>(px[c * sc]);
              for (int64_t c = nc; c < kC; ++c) d[c] = acc_t(0);
            }
          }
        };
        gather(xp, input, X);
        gather(op, output, M);
        gather(gp, grad_out, G);
        route_block(X, M, G, acc, H, W);
        const int64_t sc = grad.stride(1), sh = grad.stride(2), sw = grad.stride(3);
        scalar_t* base = dp + n * grad.stride(0) + c0 * sc;
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t w = 0; w < W; ++w) {
            scalar_t* px = base + h * sh + w * sw;
            const acc_t* a = acc + (h * W + w) * kC;
            for (int64_t c = 0; c < nc; ++c) px[c * sc] = static_cast<scalar_t>(a[c]);
          }
        }
      }
    });
  });
  return grad;
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
  // The gradient of max_pool3x3 from its forward output (no second pass, no indices).
  m.def("max_pool3x3_backward(Tensor grad_out, Tensor input, Tensor output) -> Tensor");
}

TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("max_pool3x3", &googlenet_fused::max_pool3x3);
  m.impl("max_pool3x3_backward", &googlenet_fused::max_pool3x3_backward);
}
