// The window geometry of convolution and pooling nodes (kernels/conv_geometry.h), read and
// validated from their shapes and ONNX attributes (strides, pads = [top, left, bottom, right],
// dilations, group, kernel_shape); shared by conv.cpp, norm.cpp (pooling) and qconv.cpp.
#pragma once

#include <cstdint>

#include "graph/ops/builtin_ops.h"
#include "kernels/conv_geometry.h"

namespace lowbit::ops {

using kernels::ConvGeometry;
using kernels::PoolGeometry;
using kernels::Window;

// x: NCHW input shape; w: the weight shape [out_channels, in_channels/group, kh, kw]. Throws
// shape errors naming the node.
ConvGeometry conv_geometry(const Node& node, const Shape& x, const Shape& w);
PoolGeometry pool_geometry(const Node& node, const Shape& x);

}  // namespace lowbit::ops
