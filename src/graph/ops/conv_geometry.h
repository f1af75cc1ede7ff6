// Window geometry shared by the float convolution and pooling ops (conv.cpp) and the integer
// convolution (qconv.cpp): NCHW, ONNX attribute names (strides, pads = [top, left, bottom, right],
// dilations, group, kernel_shape).
#pragma once

#include <cstdint>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {

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

// x: NCHW input shape; w: the weight shape [out_channels, in_channels/group, kh, kw]. Throws
// shape errors naming the node.
ConvGeometry conv_geometry(const Node& node, const Shape& x, const Shape& w);
PoolGeometry pool_geometry(const Node& node, const Shape& x);

}  // namespace lowbit::ops
