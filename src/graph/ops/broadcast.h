// Internal: numpy / ONNX multidirectional broadcasting for element-wise ops with two inputs.
// Shapes are aligned at their last dimension; along each dimension the sizes must be equal or one
// of them 1 (a missing leading dimension counts as 1), and the output takes the larger.
#pragma once

#include <cstdint>
#include <vector>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {

// The output shape for declared shapes, which may hold -1 (a size known only at run time): -1
// against 1 or -1 stays -1, against n > 1 gives n. Throws a shape error naming the node.
Shape broadcast_shape(const Node& node, const Shape& a, const Shape& b);

// How the output's elements map to the elements of each input, for concrete shapes.
struct Broadcast {
  Shape out;
  std::vector<int64_t> stride_a, stride_b;  // per output dimension; 0 where the input is broadcast
  bool same_shapes = false;                 // a, b and out all alike: element i is element i everywhere
  int64_t numel() const;
};
// Throws a shape error naming the node when the shapes do not broadcast.
Broadcast plan_broadcast(const Node& node, const Shape& a, const Shape& b);

// Calls f(i, ia, ib) for output elements i in [begin, end) in order, with the offsets of the input
// elements that output element i reads.
template <typename F>
void for_each_broadcast(const Broadcast& m, int64_t begin, int64_t end, F&& f) {
  const size_t rank = m.out.size();
  std::vector<int64_t> index(rank);
  int64_t rest = begin, ia = 0, ib = 0;
  for (size_t d = rank; d-- > 0;) {
    index[d] = rest % m.out[d];
    rest /= m.out[d];
    ia += index[d] * m.stride_a[d];
    ib += index[d] * m.stride_b[d];
  }
  for (int64_t i = begin; i < end; ++i) {
    f(i, ia, ib);
    for (size_t d = rank; d-- > 0;) {  // next index, last dimension fastest
      ia += m.stride_a[d];
      ib += m.stride_b[d];
      if (++index[d] < m.out[d]) break;
      ia -= m.stride_a[d] * m.out[d];
      ib -= m.stride_b[d] * m.out[d];
      index[d] = 0;
    }
  }
}

}  // namespace lowbit::ops
