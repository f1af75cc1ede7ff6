// Internal: the geometry of a 2-D window over NCHW data (convolution, pooling), as the kernels take
// it. The graph's ops fill it from a node's shapes and attributes (graph/ops/conv_geometry.h).
#pragma once

#include <cstdint>

namespace lowbit::kernels {

struct Window {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
};

// Shapes and attributes of one convolution node, validated.
struct ConvGeometry : Window {
  int64_t batch = 0, in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0, groups = 1, out_h = 0, out_w = 0;
  int64_t group_in() const { return in_channels / groups; }
  int64_t group_out() const { return out_channels / groups; }
  int64_t patch() const { return group_in() * kernel_h * kernel_w; }  // the GEMM's K
  int64_t out_spatial() const { return out_h * out_w; }
  int64_t in_spatial() const { return in_h * in_w; }
};

struct PoolGeometry : Window {
  int64_t batch = 0, channels = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
};

}  // namespace lowbit::kernels
