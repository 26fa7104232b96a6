// Layout helpers shared by the CPU kernels: how a 4-D [N, C, H, W] tensor's pixels and channels
// lie in memory, and shapes for error messages.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace googlenet_fused {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

inline std::string shapes_str(const std::vector<at::Tensor>& ts) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < ts.size(); ++i) s << (i ? ", " : "") << ts[i].sizes();
  s << "]";
  return s.str();
}

// Stride between consecutive pixels when (H, W) can be walked as one axis; nullopt otherwise.
inline std::optional<int64_t> pixel_stride(const at::Tensor& t) {
  const int64_t H = t.size(2), W = t.size(3);
  if (H * W <= 1) return 1;
  if (W == 1) return t.stride(2);
  if (H == 1 || t.stride(2) == W * t.stride(3)) return t.stride(3);
  return std::nullopt;
}

// Each channel's H*W pixels contiguous: NCHW and its channel slices.
inline bool is_planar(const at::Tensor& t) {
  auto ps = pixel_stride(t);
  return ps && *ps == 1;
}

// Channels contiguous at each pixel, pixels walkable as one axis: channels_last and its slices.
inline bool is_channels_last_like(const at::Tensor& t) {
  return pixel_stride(t).has_value() && (t.size(1) == 1 || t.stride(1) == 1);
}

// The layout of a new output that follows `t`: channels_last when t keeps channels contiguous.
inline at::MemoryFormat output_format(const at::Tensor& t) {
  const bool cl = t.size(1) > 1 && t.stride(1) == 1 && t.size(2) * t.size(3) > 1;
  return cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// Whether a and b may touch the same bytes (an output against the inputs it must not overwrite).
inline bool may_share_memory(const at::Tensor& a, const at::Tensor& b) {
  if (!a.has_storage() || !b.has_storage() || a.numel() == 0 || b.numel() == 0) return false;
  const auto status = at::get_overlap_status(a, b);
  if (status == at::MemOverlapStatus::No) return false;
  if (status != at::MemOverlapStatus::TooHard) return true;
  if (!a.storage().is_alias_of(b.storage())) return false;
  // Strided tensors of one storage: compare the byte ranges they span.
  auto span = [](const at::Tensor& t) {
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const int64_t item = t.element_size();
    const int64_t start = t.storage_offset() * item;
    return std::make_pair(start, start + (last + 1) * item);
  };
  const auto ra = span(a), rb = span(b);
  return ra.first < rb.second && rb.first < ra.second;
}

}  // namespace googlenet_fused
