// max_pool3x3: GoogLeNet's 3×3 max pooling on CPU: the inception pool branch's (stride 1,
// padding 1) and, with stride, padding and ceil_mode, the stem's and between stages' (stride 2).
//
// ATen's CPU max pooling is slow for these shapes (PLATFORM.md: 18.9 ms NCHW / 1.9 ms
// channels_last for inception 4a at batch 16) and it dominated the fused module's time after the
// convolutions. Inference (max_pool3x3) at stride 1 is separable, a max over three rows then
// over three columns (max is associative, so the result is exact), each step one vectorizable
// loop over contiguous values in either layout; other strides take each window directly.
// Padding never wins (as in ATen, it acts as -inf) and NaN propagates: a window holding NaN gives
// NaN. Output sizes follow ATen's rule (ceil_mode included); the output has the input's layout.
//
// Training (max_pool3x3_with_taps) also returns each output's tap: which of the window's nine
// positions (row-major, 0-8) held the maximum, as one byte, found exactly as ATen's forward
// finds its index (a greater value or a NaN replaces the maximum: ties go to the first, NaN to
// the last). The backward (max_pool3x3_backward_into) needs nothing else: each input pixel
// gathers the gradients of the (at most nine) windows that picked it, and adds them to the
// gradient tensor it is given (the inception module's: its 1×1 convolutions' input gradient, so
// the pool branch's costs no extra pass) or writes them there. No int64 indices (8 bytes per
// output), no zero-filled gradient, no second pooling pass, and it works from any layout.
#include "layout.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace googlenet_fused {
namespace {

// How the kernels hold a dtype's values: `storage` is what they load and store, `compute` what
// they compare, load() and store() the conversions. bf16 is kept as its raw 16 bits and
// compared as the float those bits make in the top half of a float (exact both ways: a max
// only picks values): the loops then run on 32-bit lanes and vectorize (AVX-512: 16 values),
// where c10::BFloat16's operators convert one value at a time and left bf16 pooling several
// times slower than fp32's. Other dtypes are their own storage.
template <typename scalar_t>
struct Values {
  using storage = scalar_t;
  using compute = scalar_t;
  static compute load(storage v) { return v; }
  static storage store(compute v) { return v; }
};

template <>
struct Values<c10::BFloat16> {
  using storage = uint16_t;
  using compute = float;
  static float load(uint16_t bits) {
    return __builtin_bit_cast(float, static_cast<uint32_t>(bits) << 16);
  }
  static uint16_t store(float v) {
    return static_cast<uint16_t>(__builtin_bit_cast(uint32_t, v) >> 16);
  }
};

// Whether v replaces m as the maximum: greater, or NaN (the last NaN wins; ATen's rule).
template <typename T>
inline bool takes_over(T v, T m) {
  return v > m || v != v;
}

// max(m, v) where NaN wins, written so the compiler emits a compare and a blend.
template <typename T>
inline T nan_max(T m, T v) {
  return takes_over(v, m) ? v : m;
}

template <typename scalar_t, typename storage_t = typename Values<scalar_t>::storage>
inline void max_of_three(storage_t* dst, const storage_t* a, const storage_t* b,
                         const storage_t* c, int64_t n) {
  using V = Values<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = V::store(nan_max(nan_max(V::load(a[i]), V::load(b[i])), V::load(c[i])));
  }
}

// The tensor's values as the kernels hold them.
template <typename scalar_t>
const typename Values<scalar_t>::storage* values_of(const at::Tensor& t) {
  return reinterpret_cast<const typename Values<scalar_t>::storage*>(t.const_data_ptr<scalar_t>());
}

template <typename scalar_t>
typename Values<scalar_t>::storage* mutable_values_of(const at::Tensor& t) {
  return reinterpret_cast<typename Values<scalar_t>::storage*>(t.data_ptr<scalar_t>());
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
  using storage_t = typename Values<scalar_t>::storage;
  const storage_t* in = values_of<scalar_t>(x);
  storage_t* out_base = mutable_values_of<scalar_t>(out);
  at::parallel_for(0, N * per_image * bands, 1, [&](int64_t begin, int64_t end) {
    std::vector<storage_t> column_max(band * L);  // max over rows h-1..h+1
    storage_t* cm = column_max.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / bands, h0 = (task % bands) * band;
      const int64_t h1 = std::min(H, h0 + band), n = plane / per_image, c = plane % per_image;
      const storage_t* src = in + n * x.stride(0) + c * x.stride(1);
      storage_t* dst = out_base + n * out.stride(0) + c * out.stride(1) + h0 * L;
      // Rows with both neighbours in one loop; at the top and bottom the row itself stands in
      // for the missing neighbour (padding never wins).
      const int64_t inner0 = std::max<int64_t>(h0, 1), inner1 = std::min(h1, H - 1);
      if (inner1 > inner0) {
        max_of_three<scalar_t>(cm + (inner0 - h0) * L, src + (inner0 - 1) * L, src + inner0 * L,
                               src + (inner0 + 1) * L, (inner1 - inner0) * L);
      }
      auto border_row = [&](int64_t h) {
        const storage_t* mid = src + h * L;
        max_of_three<scalar_t>(cm + (h - h0) * L, h > 0 ? mid - L : mid, mid,
                               h + 1 < H ? mid + L : mid, L);
      };
      if (h0 == 0) border_row(0);
      if (h1 == H && H > 1) border_row(H - 1);
      const int64_t rows = h1 - h0;
      if (W == 1) {
        std::copy(cm, cm + rows * L, dst);
        continue;
      }
      max_of_three<scalar_t>(dst + unit, cm, cm + unit, cm + 2 * unit, rows * L - 2 * unit);
      for (int64_t r = 0; r < rows; ++r) {
        storage_t* row_out = dst + r * L;
        const storage_t* row = cm + r * L;
        max_of_three<scalar_t>(row_out, row, row, row + unit, unit);
        max_of_three<scalar_t>(row_out + L - unit, row + L - 2 * unit, row + L - unit,
                               row + L - unit, unit);
      }
    }
  });
}

// A 3×3 max pooling's geometry: `stride`, `pad` pixels of padding on each side, the output
// Ho × Wo as ATen's pooling_output_shape computes it. Output row ho's window starts at input row
// ho * stride - pad (likewise for columns).
struct Window {
  int64_t H, W, Ho, Wo, stride, pad;

  // The output rows (or columns) whose windows hold input row (or column) i: [first, last].
  std::pair<int64_t, int64_t> outputs_of(int64_t i, int64_t outputs) const {
    const int64_t lo = i + pad - 2;  // window start >= lo
    const int64_t first = lo <= 0 ? 0 : (lo + stride - 1) / stride;
    return {first, std::min((i + pad) / stride, outputs - 1)};
  }
};

// ATen's output size of a 3×3 window: floor (or ceil) of (size + 2 pad - 3) / stride, plus one;
// with ceil_mode the last window must start inside the image or its left padding.
int64_t pooled_size(int64_t size, int64_t stride, int64_t pad, bool ceil_mode) {
  const int64_t span = size + 2 * pad - 3 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && out > 0 && (out - 1) * stride >= size + pad) --out;
  return std::max<int64_t>(out, 0);
}

// The window of `input` [N, C, H, W] pooled at (stride, padding, ceil_mode), checked as ATen
// checks it; `op` names the caller in errors.
Window window_of(const char* op, const at::Tensor& input, int64_t stride, int64_t padding,
                 bool ceil_mode) {
  TORCH_CHECK(input.dim() == 4, op, ": expected a 4-D [N, C, H, W] input, got shape ",
              shape_str(input));
  TORCH_CHECK(stride >= 1 && (padding == 0 || padding == 1), op,
              ": expected stride >= 1 and padding 0 or 1 (at most half the 3×3 window), got "
              "stride ", stride, " and padding ", padding);
  const int64_t H = input.size(2), W = input.size(3);
  const Window win{H, W, pooled_size(H, stride, padding, ceil_mode),
                   pooled_size(W, stride, padding, ceil_mode), stride, padding};
  TORCH_CHECK((win.Ho >= 1 || H == 0) && (win.Wo >= 1 || W == 0), op, ": input ",
              shape_str(input), " is too small for a 3×3 window with padding ", padding);
  return win;
}

// The input with dense rows in the layout its output takes (planar: pixel stride 1;
// channels-last: pixel stride C); anything else is copied once.
at::Tensor dense_rows(const at::Tensor& input, bool channels_last) {
  const bool dense = channels_last ? pixel_stride(input) == input.size(1) : is_planar(input);
  return dense ? input
               : input.contiguous(channels_last ? at::MemoryFormat::ChannelsLast
                                                : at::MemoryFormat::Contiguous);
}

constexpr int64_t kPoolChannels = 64;  // values of one pixel kept in registers at a time

// Every window read directly, tap by tap (row-major, padding skipped), one loop per tap over up
// to kPoolChannels of a pixel's `unit` contiguous values (channels-last: its C channels;
// planar: one value), keeping the maximum and, when `taps` is given, its position. The position
// lives in an integer as wide as the value while the window is scanned (GCC vectorizes the
// compare-and-blend only at one lane width) and is stored as a byte at the end. A task is one
// output row of one plane.
template <typename scalar_t>
void pool_windows(const at::Tensor& x, const at::Tensor& out, uint8_t* taps, const Window& win,
                  bool channels_last) {
  using V = Values<scalar_t>;
  using storage_t = typename V::storage;
  using compute_t = typename V::compute;
  using position_t = std::conditional_t<sizeof(compute_t) == 8, int64_t, int32_t>;
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t unit = channels_last ? C : 1, per_image = channels_last ? 1 : C;
  const storage_t* in = values_of<scalar_t>(x);
  storage_t* out_base = mutable_values_of<scalar_t>(out);
  at::parallel_for(0, N * per_image * win.Ho, 1, [&](int64_t begin, int64_t end) {
    compute_t best[kPoolChannels];
    position_t where[kPoolChannels];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t plane = task / win.Ho, ho = task % win.Ho;
      const int64_t n = plane / per_image, c = plane % per_image;
      const storage_t* src = in + n * x.stride(0) + c * x.stride(1);
      // The taps tensor has out's strides.
      const int64_t row_out = n * out.stride(0) + c * out.stride(1) + ho * win.Wo * unit;
      const int64_t top = ho * win.stride - win.pad;
      for (int64_t wo = 0; wo < win.Wo; ++wo) {
        const int64_t left = wo * win.stride - win.pad;
        for (int64_t k0 = 0; k0 < unit; k0 += kPoolChannels) {
          const int64_t nk = std::min(kPoolChannels, unit - k0);
          bool first = true;
          for (int64_t dh = 0; dh < 3; ++dh) {
            if (top + dh < 0 || top + dh >= win.H) continue;
            for (int64_t dw = 0; dw < 3; ++dw) {
              if (left + dw < 0 || left + dw >= win.W) continue;
              const storage_t* v = src + ((top + dh) * win.W + left + dw) * unit + k0;
              const position_t position = static_cast<position_t>(dh * 3 + dw);
              if (first) {
                for (int64_t k = 0; k < nk; ++k) {
                  best[k] = V::load(v[k]);
                  where[k] = position;
                }
                first = false;
              } else if (taps) {
                for (int64_t k = 0; k < nk; ++k) {
                  const compute_t value = V::load(v[k]);
                  const bool take = takes_over(value, best[k]);
                  best[k] = take ? value : best[k];
                  where[k] = take ? position : where[k];
                }
              } else {
                for (int64_t k = 0; k < nk; ++k) best[k] = nan_max(best[k], V::load(v[k]));
              }
            }
          }
          const int64_t at = row_out + wo * unit + k0;
          if constexpr (std::is_same_v<storage_t, compute_t>) {
            std::copy(best, best + nk, out_base + at);
          } else {
            storage_t* dst = out_base + at;
            for (int64_t k = 0; k < nk; ++k) dst[k] = V::store(best[k]);
          }
          if (taps) {  // a local restrict pointer: byte stores may alias anything else
            uint8_t* __restrict tap = taps + at;
            for (int64_t k = 0; k < nk; ++k) tap[k] = static_cast<uint8_t>(where[k]);
          }
        }
      }
    }
  });
}

// The pooled output (and taps) of `input`, in its layout.
std::tuple<at::Tensor, at::Tensor> pool(const char* op, const at::Tensor& input, int64_t stride,
                                        int64_t padding, bool ceil_mode, bool with_taps) {
  const Window win = window_of(op, input, stride, padding, ceil_mode);
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op,
              ": expected a floating point input, got ", input.scalar_type());
  TORCH_CHECK(input.device().is_cpu(), op, ": this kernel is CPU-only, got an input on ",
              input.device());
  const at::MemoryFormat format = output_format(input);
  const bool channels_last = format == at::MemoryFormat::ChannelsLast;
  const at::Tensor x = dense_rows(input, channels_last);
  const std::vector<int64_t> shape = {x.size(0), x.size(1), win.Ho, win.Wo};
  at::Tensor out = at::empty(shape, x.options(), format);
  at::Tensor taps = with_taps ? at::empty(shape, x.options().dtype(at::kByte), format)
                              : at::Tensor();
  if (out.numel() == 0) return {out, taps};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "max_pool3x3", [&] {
    if (!with_taps && stride == 1 && padding == 1) {  // the pool branch's inference
      pool_planes<scalar_t>(x, out, channels_last);
    } else {
      pool_windows<scalar_t>(x, out, with_taps ? taps.data_ptr<uint8_t>() : nullptr, win,
                             channels_last);
    }
  });
  return {out, taps};
}

at::Tensor max_pool3x3(const at::Tensor& input, int64_t stride, int64_t padding, bool ceil_mode) {
  return std::get<0>(pool("max_pool3x3", input, stride, padding, ceil_mode, false));
}

std::tuple<at::Tensor, at::Tensor> max_pool3x3_with_taps(const at::Tensor& input, int64_t stride,
                                                         int64_t padding, bool ceil_mode) {
  return pool("max_pool3x3_with_taps", input, stride, padding, ceil_mode, true);
}

constexpr int64_t kGatherChannels = 64;  // channels of one input pixel gathered at a time

// grad_input (+)= the gradient each input pixel gathers from the windows that picked it. A task
// is one input row of one image. Channels-last (every tensor's channels contiguous at each
// pixel): the loops run over up to kGatherChannels contiguous channels and vectorize; any other
// layout takes each value by its strides.
template <typename scalar_t, typename acc_t>
void gather_gradients(const at::Tensor& grad_input, const at::Tensor& grad_out,
                      const at::Tensor& taps, const Window& win, bool accumulate) {
  const int64_t N = grad_input.size(0), C = grad_input.size(1);
  const bool channels_last = is_channels_last_like(grad_input) &&
                             is_channels_last_like(grad_out) && is_channels_last_like(taps);
  const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
  const uint8_t* tp = taps.const_data_ptr<uint8_t>();
  scalar_t* dp = grad_input.data_ptr<scalar_t>();
  const auto gs = grad_out.strides(), ts = taps.strides(), ds = grad_input.strides();
  at::parallel_for(0, N * win.H, 1, [&](int64_t begin, int64_t end) {
    acc_t sum[kGatherChannels];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / win.H, h = task % win.H;
      const auto [ho0, ho1] = win.outputs_of(h, win.Ho);
      for (int64_t w = 0; w < win.W; ++w) {
        const auto [wo0, wo1] = win.outputs_of(w, win.Wo);
        for (int64_t c0 = 0; c0 < C; c0 += kGatherChannels) {
          const int64_t nc = std::min(kGatherChannels, C - c0);
          scalar_t* d = dp + n * ds[0] + c0 * ds[1] + h * ds[2] + w * ds[3];
          if (channels_last) {
            for (int64_t c = 0; c < nc; ++c) sum[c] = accumulate ? acc_t(d[c]) : acc_t(0);
          } else {
            for (int64_t c = 0; c < nc; ++c) sum[c] = accumulate ? acc_t(d[c * ds[1]]) : acc_t(0);
          }
          for (int64_t ho = ho0; ho <= ho1; ++ho) {
            for (int64_t wo = wo0; wo <= wo1; ++wo) {
              // This pixel's position in window (ho, wo).
              const uint8_t position = static_cast<uint8_t>(
                  (h - (ho * win.stride - win.pad)) * 3 + (w - (wo * win.stride - win.pad)));
              const scalar_t* g = gp + n * gs[0] + c0 * gs[1] + ho * gs[2] + wo * gs[3];
              const uint8_t* t = tp + n * ts[0] + c0 * ts[1] + ho * ts[2] + wo * ts[3];
              if (channels_last) {
                for (int64_t c = 0; c < nc; ++c) {
                  sum[c] += t[c] == position ? acc_t(g[c]) : acc_t(0);
                }
              } else {
                for (int64_t c = 0; c < nc; ++c) {
                  sum[c] += t[c * ts[1]] == position ? acc_t(g[c * gs[1]]) : acc_t(0);
                }
              }
            }
          }
          if (channels_last) {
            for (int64_t c = 0; c < nc; ++c) d[c] = static_cast<scalar_t>(sum[c]);
          } else {
            for (int64_t c = 0; c < nc; ++c) d[c * ds[1]] = static_cast<scalar_t>(sum[c]);
          }
        }
      }
    }
  });
}

void max_pool3x3_backward_into(const at::Tensor& grad_input, const at::Tensor& grad_out,
                               const at::Tensor& taps, int64_t stride, int64_t padding,
                               bool ceil_mode, bool accumulate) {
  const Window win = window_of("max_pool3x3_backward_into", grad_input, stride, padding,
                               ceil_mode);
  const std::vector<int64_t> pooled = {grad_input.size(0), grad_input.size(1), win.Ho, win.Wo};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(pooled) &&
                  taps.sizes() == at::IntArrayRef(pooled),
              "max_pool3x3_backward_into: grad_out ", shape_str(grad_out), " and taps ",
              shape_str(taps), " must have the pooled shape ", at::IntArrayRef(pooled),
              " of grad_input ", shape_str(grad_input), " (stride ", stride, ", padding ",
              padding, ", ceil_mode ", ceil_mode, ")");
  TORCH_CHECK(taps.scalar_type() == at::kByte, "max_pool3x3_backward_into: taps must be uint8 "
              "(from max_pool3x3_with_taps), got ", taps.scalar_type());
  TORCH_CHECK(grad_out.scalar_type() == grad_input.scalar_type(),
              "max_pool3x3_backward_into: grad_out is ", grad_out.scalar_type(),
              " but grad_input is ", grad_input.scalar_type());
  TORCH_CHECK(grad_input.device().is_cpu() && grad_out.device().is_cpu() && taps.device().is_cpu(),
              "max_pool3x3_backward_into: this kernel is CPU-only");
  TORCH_CHECK(!may_share_memory(grad_input, grad_out) && !may_share_memory(grad_input, taps),
              "max_pool3x3_backward_into: grad_input overlaps grad_out or taps");
  if (grad_input.numel() == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_input.scalar_type(), "max_pool3x3_backward_into", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    gather_gradients<scalar_t, acc_t>(grad_input, grad_out, taps, win, accumulate);
  });
}

}  // namespace
}  // namespace googlenet_fused

TORCH_LIBRARY_FRAGMENT(googlenet_fused, m) {
  m.def("max_pool3x3(Tensor input, int stride=1, int padding=1, bool ceil_mode=False) -> Tensor");
  // The output and each output's tap (uint8, 0-8): what the backward needs.
  m.def("max_pool3x3_with_taps(Tensor input, int stride=1, int padding=1, bool ceil_mode=False) "
        "-> (Tensor, Tensor)");
  // grad_input (+)= the gradient of max_pool3x3 w.r.t. its input, from the forward's taps.
  m.def("max_pool3x3_backward_into(Tensor(a!) grad_input, Tensor grad_out, Tensor taps, "
        "int stride=1, int padding=1, bool ceil_mode=False, bool accumulate=False) -> ()");
}

TORCH_LIBRARY_IMPL(googlenet_fused, CPU, m) {
  m.impl("max_pool3x3", &googlenet_fused::max_pool3x3);
  m.impl("max_pool3x3_with_taps", &googlenet_fused::max_pool3x3_with_taps);
  m.impl("max_pool3x3_backward_into", &googlenet_fused::max_pool3x3_backward_into);
}
