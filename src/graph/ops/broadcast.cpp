// numpy / ONNX broadcasting of two shapes (broadcast.h), shared by the element-wise binary ops.
#include <algorithm>

#include "graph/ops/broadcast.h"

namespace lowbit::ops {

Shape broadcast_shape(const Node& node, const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t k = 0; k < rank; ++k) {  // k counts from the last dimension
    const int64_t x = k < a.size() ? a[a.size() - 1 - k] : 1, y = k < b.size() ? b[b.size() - 1 - k] : 1;
    int64_t& o = out[rank - 1 - k];
    if (x == y || y == 1)
      o = x;
    else if (x == 1)
      o = y;
    else if (x < 0 || y < 0)
      o = std::max(x, y);  // -1 against n > 1: the run-time size must be n
    else
      shape_error(node, "inputs " + to_string(a) + " and " + to_string(b) + " do not broadcast (dimension " +
                            std::to_string(rank - 1 - k) + " of the result: " + std::to_string(x) + " against " +
                            std::to_string(y) + ")");
  }
  return out;
}

int64_t Broadcast::numel() const {
  int64_t n = 1;
  for (int64_t d : out) n *= d;
  return n;
}

Broadcast plan_broadcast(const Node& node, const Shape& a, const Shape& b) {
  Broadcast m;
  m.out = broadcast_shape(node, a, b);
  const size_t rank = m.out.size();
  auto strides = [&](const Shape& s) {
    std::vector<int64_t> stride(rank, 0);
    int64_t step = 1;
    for (size_t k = 0; k < s.size(); ++k) {
      const size_t d = rank - 1 - k, sd = s.size() - 1 - k;
      stride[d] = s[sd] == 1 && m.out[d] != 1 ? 0 : step;
      step *= s[sd];
    }
    return stride;
  };
  m.stride_a = strides(a);
  m.stride_b = strides(b);
  m.same_shapes = a == b;
  return m;
}

}  // namespace lowbit::ops
