// Ops that move, select or describe values without computing new ones, with ONNX semantics (the
// ONNX op of the same name; what recent opsets pass as constant inputs is an attribute here, which
// the importer fills from those inputs):
//   Transpose  `perm` (default: the axes reversed)
//   Concat     `axis` (required, negative counts from the end), one or more inputs
//   Squeeze    `axes` (optional: every dimension of size 1), Unsqueeze `axes` (required, negative
//              counting from the end of the output); both share the input's buffer, no copy
//   Slice      `starts`, `ends` (required), `axes` (default 0..k-1), `steps` (default 1), clamped as ONNX
//   Gather     `axis` (default 0); indices s64 or s32 of any rank, negative counting from the end
//   Shape      `start`, `end` (optional, opset 15): the input's dimensions as s64 [k]
// All but Shape take any byte-addressable dtype (f32, s64 shape vectors, s8 codes, bool, f16...; not
// the packed low-bit types) and give their input's dtype; gradients exist for f32 values (other
// dtypes get a zero gradient). Copies are plain loops in output order on one thread, so gradients
// that add up (Gather's repeated indices) do so in a fixed order.
#include <cstring>
#include <limits>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

// ---- Helpers -----------------------------------------------------------------------------------

// Bytes per value of a byte-addressable dtype; packed low-bit values cannot be moved one by one.
size_t element_size(const Node& node, DType dtype) {
  if (!is_byte_addressable(dtype))
    shape_error(node, std::string("packed ") + name_of(dtype) + " values cannot be moved one by one (unpack them first)");
  return static_cast<size_t>(bits_of(dtype) / 8);
}

// `axis` in [-rank, rank) made non-negative; `what` names the range in the error ("input [2, 3]").
int64_t axis_in(const Node& node, int64_t axis, int64_t rank, const std::string& what) {
  if (axis < -rank || axis >= rank) shape_error(node, "axis " + std::to_string(axis) + " is out of range for " + what);
  return axis < 0 ? axis + rank : axis;
}

// A required list attribute: Error naming the node when it is absent or not a list of integers.
std::vector<int64_t> required_ints(const Node& node, const std::string& key) {
  node.attr(key);
  return node.attr_ints(key, {});
}

std::string list_string(const std::vector<int64_t>& v) {  // as written: to_string(Shape) prints -1 as N
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ", ") + std::to_string(x);
  return "[" + s + "]";
}

std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> stride(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) stride[d - 1] = stride[d] * shape[d];
  return stride;
}

int64_t product(const Shape& shape, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t d = begin; d < end; ++d) p *= shape[d];
  return p;
}

// Output element (i_0, ..., i_{r-1}) of a strided view reads input element base + sum_d i_d * stride[d]
// (Transpose: permuted strides; Slice: strides times steps, base at the starts).
struct StridedView {
  Shape shape;
  std::vector<int64_t> stride;
  int64_t base = 0;
};

// Calls f(output offset, input offset, count, input stride) for each run along the last dimension,
// in output order.
template <typename F>
void for_each_run(const StridedView& v, F&& f) {
  const int64_t total = element_count(v.shape);
  if (total == 0) return;
  if (v.shape.empty()) return f(int64_t{0}, v.base, int64_t{1}, int64_t{0});
  const size_t rank = v.shape.size();
  const int64_t run = v.shape.back();
  std::vector<int64_t> index(rank, 0);
  int64_t offset = v.base;
  for (int64_t i = 0; i < total; i += run) {
    f(i, offset, run, v.stride.back());
    for (size_t d = rank - 1; d-- > 0;) {  // odometer over the leading dimensions
      offset += v.stride[d];
      if (++index[d] < v.shape[d]) break;
      offset -= v.stride[d] * v.shape[d];
      index[d] = 0;
    }
  }
}

template <typename T>
void gather_view(const StridedView& v, const void* src, void* dst) {
  const T* s = static_cast<const T*>(src);
  T* d = static_cast<T*>(dst);
  for_each_run(v, [&](int64_t out, int64_t in, int64_t n, int64_t stride) {
    for (int64_t k = 0; k < n; ++k) d[out + k] = s[in + k * stride];
  });
}

// dst[i] = src[input offset of output element i], values of `size` bytes copied bit for bit.
void copy_view(const StridedView& v, size_t size, const void* src, void* dst) {
  switch (size) {
    case 1: return gather_view<uint8_t>(v, src, dst);
    case 2: return gather_view<uint16_t>(v, src, dst);
    case 4: return gather_view<uint32_t>(v, src, dst);
    default: return gather_view<uint64_t>(v, src, dst);
  }
}

// The gradient of copy_view for f32 values whose view reads each input element at most once:
// dx[input offset of output element i] = dy[i]; the elements no output reads are left as they are.
void scatter_view(const StridedView& v, const float* dy, float* dx) {
  for_each_run(v, [&](int64_t out, int64_t in, int64_t n, int64_t stride) {
    for (int64_t k = 0; k < n; ++k) dx[in + k * stride] = dy[out + k];
  });
}

// Makes `grad` the gradient of `x`: the shape of x, zeros, and true when x is f32 (values of other
// dtypes are not differentiated: their gradient stays 0).
bool start_gradient(Tensor& grad, const Tensor& x) {
  prepare_output(grad, DType::F32, x.shape());
  grad.zero();
  return x.dtype() == DType::F32;
}

// ---- Transpose ---------------------------------------------------------------------------------

// Output dimension i is input dimension perm[i]. Gradient: the transpose by the inverse permutation.
class Transpose final : public Op {
 public:
  Transpose() { traits_ = {.onnx = "Transpose"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {view(node, in[0]).shape};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    element_size(node, in[0]);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const StridedView v = view(node, in[0]->shape());
    const size_t size = element_size(node, in[0]->dtype());
    prepare_output(*out[0], in[0]->dtype(), v.shape);
    copy_view(v, size, in[0]->raw(), out[0]->raw());
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0] || !start_gradient(*in_grad[0], *in[0])) return;
    scatter_view(view(node, in[0]->shape()), out_grad[0]->data<float>(), in_grad[0]->data<float>());
  }

 private:
  static StridedView view(const Node& node, const Shape& in) {
    const int64_t rank = static_cast<int64_t>(in.size());
    std::vector<int64_t> perm(in.size());
    for (int64_t i = 0; i < rank; ++i) perm[i] = rank - 1 - i;
    if (node.attributes.count("perm")) {
      perm = node.attr_ints("perm", {});
      std::vector<bool> seen(in.size(), false);
      bool ok = static_cast<int64_t>(perm.size()) == rank;
      for (size_t i = 0; ok && i < perm.size(); ++i) {
        ok = perm[i] >= 0 && perm[i] < rank && !seen[perm[i]];
        if (ok) seen[perm[i]] = true;
      }
      if (!ok)
        shape_error(node, "attribute 'perm' " + list_string(perm) + " is not a permutation of the " + std::to_string(rank) +
                              " axes of input " + to_string(in));
    }
    const std::vector<int64_t> stride = strides_of(in);
    StridedView v;
    for (int64_t p : perm) {
      v.shape.push_back(in[p]);
      v.stride.push_back(stride[p]);
    }
    return v;
  }
};

// ---- Concat ------------------------------------------------------------------------------------

// Joins its inputs (same dtype and rank, equal dimensions except along `axis`) along `axis`.
// Gradient: dy split back into the inputs' parts.
class Concat final : public Op {
 public:
  Concat() { traits_ = {.onnx = "Concat"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    return {joined(node, in)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    check_dtypes(node, in);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    std::vector<Shape> shapes;
    std::vector<DType> dtypes;
    for (const Tensor* t : in) shapes.push_back(t->shape()), dtypes.push_back(t->dtype());
    const Shape shape = joined(node, shapes);
    const size_t size = check_dtypes(node, dtypes);
    prepare_output(*out[0], in[0]->dtype(), shape);
    const size_t axis = axis_of(node, shape.size());
    const int64_t outer = product(shape, 0, axis);
    const size_t inner = static_cast<size_t>(product(shape, axis + 1, shape.size())) * size;
    auto* dst = static_cast<std::byte*>(out[0]->raw());
    for (int64_t o = 0; o < outer; ++o)
      for (const Tensor* t : in) {
        const size_t block = static_cast<size_t>(t->dim(static_cast<int>(axis))) * inner;
        if (block) std::memcpy(dst, static_cast<const std::byte*>(t->raw()) + o * block, block);
        dst += block;
      }
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Shape& shape = out_grad[0]->shape();
    const size_t axis = axis_of(node, shape.size());
    const int64_t outer = product(shape, 0, axis), inner = product(shape, axis + 1, shape.size());
    const float* dy = out_grad[0]->data<float>();
    int64_t offset = 0;  // of input i's part in each outer block of dy
    for (size_t i = 0; i < in.size(); ++i) {
      const int64_t block = in[i]->dim(static_cast<int>(axis)) * inner;
      if (i < in_grad.size() && in_grad[i] && start_gradient(*in_grad[i], *in[i])) {
        float* dx = in_grad[i]->data<float>();
        for (int64_t o = 0; o < outer; ++o)
          std::copy(dy + o * shape[axis] * inner + offset, dy + o * shape[axis] * inner + offset + block, dx + o * block);
      }
      offset += block;
    }
  }

 private:
  static size_t axis_of(const Node& node, size_t rank) {
    node.attr("axis");  // required
    return static_cast<size_t>(axis_in(node, node.attr_int("axis", 0), static_cast<int64_t>(rank), "rank " + std::to_string(rank)));
  }
  // The output shape; a run-time dimension (-1) matches any size outside the axis.
  static Shape joined(const Node& node, std::span<const Shape> in) {
    if (in.empty()) shape_error(node, "expects at least one input");
    if (in[0].empty()) shape_error(node, "inputs must have at least one dimension (scalars do not concatenate)");
    const size_t axis = axis_of(node, in[0].size());
    Shape out = in[0];
    for (size_t i = 1; i < in.size(); ++i) {
      if (in[i].size() != in[0].size())
        shape_error(node, "input " + std::to_string(i) + " " + to_string(in[i]) + " has rank " + std::to_string(in[i].size()) +
                              ", input 0 " + to_string(in[0]) + " rank " + std::to_string(in[0].size()));
      for (size_t d = 0; d < out.size(); ++d) {
        if (d == axis) {
          out[d] = out[d] < 0 || in[i][d] < 0 ? -1 : out[d] + in[i][d];
        } else if (out[d] < 0) {
          out[d] = in[i][d];
        } else if (in[i][d] >= 0 && in[i][d] != out[d]) {
          shape_error(node, "input " + std::to_string(i) + " " + to_string(in[i]) + " has size " + std::to_string(in[i][d]) +
                                " in dimension " + std::to_string(d) + ", the inputs before it " + std::to_string(out[d]) +
                                " (only axis " + std::to_string(axis) + " may differ)");
        }
      }
    }
    return out;
  }
  static size_t check_dtypes(const Node& node, std::span<const DType> in) {
    if (in.empty()) shape_error(node, "expects at least one input");
    for (size_t i = 1; i < in.size(); ++i)
      if (in[i] != in[0])
        shape_error(node, "input " + std::to_string(i) + " is " + name_of(in[i]) + ", input 0 " + name_of(in[0]) +
                              ": the inputs must have one dtype");
    return element_size(node, in[0]);
  }
};

// ---- Squeeze and Unsqueeze ---------------------------------------------------------------------

// Removes the dimensions `axes` (each of size 1; negative counts from the end), or without `axes`
// every dimension of size 1. Shape inference keeps run-time dimensions (-1): one named in `axes` is
// checked when the node runs; without `axes` one that is 1 at run time is removed then, as ONNX
// Runtime does (give `axes` to keep it, e.g. a batch of one). Output and input share the buffer.
class Squeeze final : public ViewOp {
 public:
  Squeeze() { traits_ = {.onnx = "Squeeze", .passes_quantized = true, .layout_only = true}; }

 private:
  Shape view_shape(const Node& node, const Shape& in) const override { return squeezed(node, in); }
  static Shape squeezed(const Node& node, const Shape& in) {
    const int64_t rank = static_cast<int64_t>(in.size());
    std::vector<bool> removed(in.size(), false);
    if (!node.attributes.count("axes")) {
      for (size_t d = 0; d < in.size(); ++d) removed[d] = in[d] == 1;
    } else {
      for (int64_t a : node.attr_ints("axes", {})) {
        const size_t d = static_cast<size_t>(axis_in(node, a, rank, "input " + to_string(in)));
        if (removed[d]) shape_error(node, "attribute 'axes' names axis " + std::to_string(d) + " twice");
        if (in[d] >= 0 && in[d] != 1)
          shape_error(node, "cannot squeeze axis " + std::to_string(a) + " of input " + to_string(in) + ": its size is " +
                                std::to_string(in[d]) + ", not 1");
        removed[d] = true;
      }
    }
    Shape out;
    for (size_t d = 0; d < in.size(); ++d)
      if (!removed[d]) out.push_back(in[d]);
    return out;
  }
};

// Inserts dimensions of size 1 at `axes`, indices into the output (rank r = input rank + the number
// of axes; negative counts from the end of the output, as ONNX). Output and input share the buffer.
class Unsqueeze final : public ViewOp {
 public:
  Unsqueeze() { traits_ = {.onnx = "Unsqueeze", .passes_quantized = true, .layout_only = true}; }

 private:
  Shape view_shape(const Node& node, const Shape& in) const override { return unsqueezed(node, in); }
  static Shape unsqueezed(const Node& node, const Shape& in) {
    const std::vector<int64_t> axes = required_ints(node, "axes");
    const int64_t rank = static_cast<int64_t>(in.size() + axes.size());
    std::vector<bool> inserted(static_cast<size_t>(rank), false);
    for (int64_t a : axes) {
      const size_t d = static_cast<size_t>(axis_in(node, a, rank, "the output's rank " + std::to_string(rank)));
      if (inserted[d]) shape_error(node, "attribute 'axes' names axis " + std::to_string(d) + " twice");
      inserted[d] = true;
    }
    Shape out;
    size_t next = 0;
    for (int64_t d = 0; d < rank; ++d) out.push_back(inserted[d] ? 1 : in[next++]);
    return out;
  }
};

// ---- Slice -------------------------------------------------------------------------------------

// Along each axis a (attribute `axes`, default 0..k-1), the elements starts[a], starts[a] + steps[a],
// ... up to but excluding ends[a]. As ONNX (opset 13): a negative start or end counts from the end
// (dim added once); then for a positive step both are clamped to [0, dim], for a negative step
// start to [0, dim - 1] and end to [-1, dim - 1] (so INT64_MAX and INT64_MIN mean "to the end" either
// way). Gradient: dy scattered into zeros.
class Slice final : public Op {
 public:
  Slice() { traits_ = {.onnx = "Slice"}; }
  // Optional second input: `ends` given at run time (s64 or s32, one per sliced axis; an exporter's
  // x[:, :seq] where seq is another input's length), replacing the attribute; the sliced sizes are
  // then unknown until run time.
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 2);
    const Plan p = plan(node, in[0]);
    if (in.size() == 2 && (in[1].size() != 1 || (in[1][0] >= 0 && in[1][0] != static_cast<int64_t>(p.axes.size()))))
      shape_error(node, "run-time ends must be one value per sliced axis (" + std::to_string(p.axes.size()) + "), got " + to_string(in[1]));
    Shape out = in[0];
    for (size_t i = 0; i < p.axes.size(); ++i) {
      const size_t d = p.axes[i];
      out[d] = in.size() == 2 ? -1
               : in[0][d] >= 0 ? clamped(in[0][d], p.starts[i], p.ends[i], p.steps[i]).count
                               : dynamic_count(p.starts[i], p.ends[i], p.steps[i]);
    }
    return {out};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    element_size(node, in[0]);
    if (in.size() == 2 && in[1] != DType::S64 && in[1] != DType::S32)
      shape_error(node, std::string("run-time ends must be s64 or s32, got ") + name_of(in[1]));
    return {in[0]};
  }
  bool differentiable_input(int i) const override { return i == 0; }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const StridedView v = view(node, in[0]->shape(), in.size() > 1 ? in[1] : nullptr);
    const size_t size = element_size(node, in[0]->dtype());
    prepare_output(*out[0], in[0]->dtype(), v.shape);
    copy_view(v, size, in[0]->raw(), out[0]->raw());
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0] || !start_gradient(*in_grad[0], *in[0])) return;
    scatter_view(view(node, in[0]->shape(), in.size() > 1 ? in[1] : nullptr), out_grad[0]->data<float>(), in_grad[0]->data<float>());
  }

 private:
  struct Plan {
    std::vector<size_t> axes;
    std::vector<int64_t> starts, ends, steps;
  };
  struct Range {
    int64_t start = 0, count = 0;
  };

  static Plan plan(const Node& node, const Shape& in, const Tensor* ends = nullptr) {
    const int64_t rank = static_cast<int64_t>(in.size());
    Plan p;
    p.starts = required_ints(node, "starts");
    if (ends) {
      const Tensor e = cast(*ends, DType::S64);
      p.ends.assign(e.data<int64_t>(), e.data<int64_t>() + e.numel());
    } else {
      p.ends = required_ints(node, "ends");
    }
    const size_t k = p.starts.size();
    std::vector<int64_t> axes(k);
    for (size_t i = 0; i < k; ++i) axes[i] = static_cast<int64_t>(i);
    axes = node.attr_ints("axes", axes);
    p.steps = node.attr_ints("steps", std::vector<int64_t>(k, 1));
    if (p.ends.size() != k || axes.size() != k || p.steps.size() != k)
      shape_error(node, "attributes 'starts' " + list_string(p.starts) + ", 'ends' " + list_string(p.ends) + ", 'axes' " +
                            list_string(axes) + " and 'steps' " + list_string(p.steps) + " must have one entry per sliced axis");
    std::vector<bool> seen(in.size(), false);
    for (size_t i = 0; i < k; ++i) {
      const size_t d = static_cast<size_t>(axis_in(node, axes[i], rank, "input " + to_string(in)));
      if (seen[d]) shape_error(node, "attribute 'axes' names axis " + std::to_string(d) + " twice");
      seen[d] = true;
      p.axes.push_back(d);
      if (p.steps[i] == 0) shape_error(node, "attribute 'steps' " + list_string(p.steps) + ": a step must not be 0");
    }
    return p;
  }

  // The first index and the number of elements taken from a dimension of size `dim` (ONNX's clamping).
  static Range clamped(int64_t dim, int64_t start, int64_t end, int64_t step) {
    if (dim == 0) return {};
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    uint64_t span = 0, stride = 0;  // unsigned: |step| may be 2^63
    if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      span = end > start ? static_cast<uint64_t>(end - start) : 0;
      stride = static_cast<uint64_t>(step);
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      span = start > end ? static_cast<uint64_t>(start - end) : 0;
      stride = uint64_t{0} - static_cast<uint64_t>(step);
    }
    return {start, span ? static_cast<int64_t>((span - 1) / stride + 1) : 0};
  }

  // The size of a sliced run-time dimension: 0 when the slice is empty whatever the size (start and
  // end on the same side of 0 and not in the step's order), else unknown (-1).
  static int64_t dynamic_count(int64_t start, int64_t end, int64_t step) {
    if (step > 0 && (start >= 0) == (end >= 0) && start >= end) return 0;
    if (step < 0 && start >= 0 && end >= 0 && start <= end) return 0;
    return -1;
  }

  static StridedView view(const Node& node, const Shape& in, const Tensor* ends) {
    const Plan p = plan(node, in, ends);
    StridedView v{in, strides_of(in), 0};
    for (size_t i = 0; i < p.axes.size(); ++i) {
      const size_t d = p.axes[i];
      const Range r = clamped(in[d], p.starts[i], p.ends[i], p.steps[i]);
      v.shape[d] = r.count;
      v.base += r.start * v.stride[d];
      v.stride[d] = r.count > 1 ? v.stride[d] * p.steps[i] : 0;  // |step| < dim here: no overflow
    }
    return v;
  }
};

// ---- Gather ------------------------------------------------------------------------------------

// Picks entries of `data` along `axis` by `indices` (s64 or s32, any rank, a scalar included): the
// output is data.shape[:axis] + indices.shape + data.shape[axis+1:]. A negative index counts from
// the end; one outside [-n, n) is an error naming the node. Gradient (f32 data; indices are not
// differentiable): zeros, then dy added to each picked entry in output order, so a repeated index
// accumulates in a fixed order.
class Gather final : public Op {
 public:
  Gather() { traits_ = {.onnx = "Gather"}; }
  bool differentiable_input(int index) const override { return index == 0; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 2);
    const size_t axis = axis_of(node, in[0]);
    Shape out(in[0].begin(), in[0].begin() + axis);
    out.insert(out.end(), in[1].begin(), in[1].end());
    out.insert(out.end(), in[0].begin() + axis + 1, in[0].end());
    return {out};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    element_size(node, in[0]);
    check_index_dtype(node, in[1]);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Tensor& data = *in[0];
    const size_t axis = axis_of(node, data.shape());
    const size_t size = element_size(node, data.dtype());
    const std::vector<int64_t> picked = indices(node, *in[1], data.shape()[axis]);
    const Shape shape = infer_shapes(node, std::vector<Shape>{data.shape(), in[1]->shape()})[0];
    prepare_output(*out[0], data.dtype(), shape);
    const int64_t outer = product(data.shape(), 0, axis), n = data.shape()[axis];
    const size_t block = static_cast<size_t>(product(data.shape(), axis + 1, data.shape().size())) * size;
    if (block == 0) return;
    const auto* src = static_cast<const std::byte*>(data.raw());
    auto* dst = static_cast<std::byte*>(out[0]->raw());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t index : picked) {
        std::memcpy(dst, src + (o * n + index) * block, block);
        dst += block;
      }
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (in_grad.size() > 1 && in_grad[1]) start_gradient(*in_grad[1], *in[1]);  // indices: zero
    if (!in_grad[0] || !start_gradient(*in_grad[0], *in[0])) return;
    const Shape& shape = in[0]->shape();
    const size_t axis = axis_of(node, shape);
    const std::vector<int64_t> picked = indices(node, *in[1], shape[axis]);
    const int64_t outer = product(shape, 0, axis), n = shape[axis], inner = product(shape, axis + 1, shape.size());
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t index : picked) {
        float* row = dx + (o * n + index) * inner;
        for (int64_t c = 0; c < inner; ++c) row[c] += dy[c];
        dy += inner;
      }
  }

 private:
  static size_t axis_of(const Node& node, const Shape& data) {
    if (data.empty()) shape_error(node, "data must have at least one dimension");
    return static_cast<size_t>(axis_in(node, node.attr_int("axis", 0), static_cast<int64_t>(data.size()), "data " + to_string(data)));
  }
  static void check_index_dtype(const Node& node, DType dtype) {
    if (dtype != DType::S64 && dtype != DType::S32)
      shape_error(node, std::string("indices must be s64 or s32, got ") + name_of(dtype));
  }
  // The indices as offsets in [0, n), in order; throws naming the node for one outside [-n, n).
  static std::vector<int64_t> indices(const Node& node, const Tensor& t, int64_t n) {
    check_index_dtype(node, t.dtype());
    std::vector<int64_t> v(static_cast<size_t>(t.numel()));
    for (int64_t i = 0; i < t.numel(); ++i) {
      int64_t index = t.dtype() == DType::S64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
      if (index < -n || index >= n)
        shape_error(node, "index " + std::to_string(index) + " (indices element " + std::to_string(i) +
                              ") is out of range for an axis of size " + std::to_string(n));
      v[i] = index < 0 ? index + n : index;
    }
    return v;
  }
};

// ---- Shape -------------------------------------------------------------------------------------

// The input's dimensions start..end-1 as s64 [k] (ONNX Shape-15: `start` default 0, `end` default
// the rank; negative counts from the end; both clamped to [0, rank]; end <= start gives []). Any
// byte-addressable input dtype. Nothing to differentiate: the dimensions do not depend on the values.
class ShapeOf final : public Op {
 public:
  ShapeOf() { traits_ = {.onnx = "Shape"}; }
  bool differentiable_input(int) const override { return false; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    const auto [start, end] = range(node, in[0].size());
    return {{end - start}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (!is_byte_addressable(in[0])) shape_error(node, std::string("input must not be packed, got ") + name_of(in[0]));
    return {DType::S64};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const auto [start, end] = range(node, in[0]->shape().size());
    prepare_output(*out[0], DType::S64, {end - start});
    std::copy(in[0]->shape().begin() + start, in[0]->shape().begin() + end, out[0]->data<int64_t>());
  }
  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const>, std::span<Tensor* const> in_grad) const override {
    if (in_grad[0]) start_gradient(*in_grad[0], *in[0]);  // never asked (not differentiable): zero
  }

 private:
  static std::pair<int64_t, int64_t> range(const Node& node, size_t rank_) {
    const int64_t rank = static_cast<int64_t>(rank_);
    auto bound = [&](const char* key, int64_t fallback) {
      int64_t v = node.attr_int(key, fallback);
      if (v < 0) v += rank;
      return std::clamp<int64_t>(v, 0, rank);
    };
    const int64_t start = bound("start", 0), end = bound("end", rank);
    return {start, std::max(start, end)};
  }
};

}  // namespace

void register_transform_ops(const Registrar& add) {
  add("Transpose", std::make_unique<Transpose>());
  add("Concat", std::make_unique<Concat>());
  add("Squeeze", std::make_unique<Squeeze>());
  add("Unsqueeze", std::make_unique<Unsqueeze>());
  add("Slice", std::make_unique<Slice>());
  add("Gather", std::make_unique<Gather>());
  add("Shape", std::make_unique<ShapeOf>());
}

}  // namespace lowbit::ops
