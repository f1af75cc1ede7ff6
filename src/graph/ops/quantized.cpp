// Quantized ops: QuantizeLinear and DequantizeLinear (the boundaries between float and integer
// values), QDense (static, integer-only dense layer) and DynamicQDense (weights quantized
// offline, activations quantized per row at run time). docs/design/quantization.md derives the
// arithmetic; docs/ops.md lists inputs and attributes.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/integer_layer.h"
#include "kernels/blockq.h"
#include "kernels/implementation.h"
#include "kernels/qconv.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {

QuantParams activation_params(const Node& node, const Tensor& scale, const Tensor& zero_point, const std::string& what) {
  if (scale.dtype() != DType::F32 || scale.numel() != 1 || zero_point.dtype() != DType::S8 || zero_point.numel() != 1)
    shape_error(node, what + " must be an f32 scale and an s8 zero point of one element each, got " + name_of(scale.dtype()) +
                          to_string(scale.shape()) + " and " + name_of(zero_point.dtype()) + to_string(zero_point.shape()));
  QuantParams p{8, true, QScheme::Affine, false, -1, {scale.data<float>()[0]}, {zero_point.data<int8_t>()[0]}};
  p.validate("node '" + node.name + "' (" + node.op + ") " + what);
  return p;
}

bool relu_of(const Node& node) { return activation_of(node) == Activation::Relu; }

namespace {

bool is_scalar(const Shape& s) { return s.empty() || s == Shape{1}; }

// An initializer that Op::upgrade adds for a node's parameters (named after the node).
void add_upgrade_initializer(const Node& node, Graph& graph, const std::string& name, Tensor t) {
  if (!graph.initializers.emplace(name, std::move(t)).second)
    shape_error(node, "upgrading to the op's current version needs the name '" + name + "', which the model already uses");
}

Tensor scalar_f32(double v) {
  Tensor t(DType::F32, {});
  t.data<float>()[0] = static_cast<float>(v);
  return t;
}
Tensor scalar_s8(const Node& node, int64_t v, const char* what) {
  if (v < -128 || v > 127) shape_error(node, std::string("attribute '") + what + "' " + std::to_string(v) + " is outside [-128, 127]");
  Tensor t(DType::S8, {});
  t.data<int8_t>()[0] = static_cast<int8_t>(v);
  return t;
}

// How the scale of a QuantizeLinear / DequantizeLinear lies over x, in ONNX's three forms: one
// scale for the whole tensor (a scalar, or [1]); one per index of dimension `axis` ([D]); or x's
// shape with dimension `axis` cut into blocks of `block_size` (ONNX opset 21). x is viewed as
// [outer, dim, inner] around the axis.
struct CastLayout {
  bool per_tensor = true;
  int64_t outer = 1, dim = 1, inner = 1;
  int64_t block = 0;  // 0: one scale per index of the axis
};

CastLayout cast_layout(const Node& node, const Shape& x, const Shape& scale, const Shape* zero_point) {
  if (zero_point && *zero_point != scale)
    shape_error(node, "zero_point " + to_string(*zero_point) + " must have the shape of scale " + to_string(scale));
  CastLayout l;
  if (is_scalar(scale)) return l;
  const int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = node.attr_int("axis", 1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank)
    shape_error(node, "attribute 'axis' " + std::to_string(node.attr_int("axis", 1)) + " is outside input " + to_string(x));
  l.block = node.attr_int("block_size", 0);
  if (l.block < 0) shape_error(node, "attribute 'block_size' must not be negative");
  l.per_tensor = false;
  for (int64_t i = 0; i < rank; ++i) (i < axis ? l.outer : i > axis ? l.inner : l.dim) *= x[static_cast<size_t>(i)];
  if (l.block == 0) {
    if (scale.size() != 1 || (x[static_cast<size_t>(axis)] >= 0 && scale[0] != x[static_cast<size_t>(axis)]))
      shape_error(node, "scale must be a scalar (per tensor) or [" + std::to_string(x[static_cast<size_t>(axis)]) +
                            "] (per axis " + std::to_string(axis) + "), got " + to_string(scale));
    return l;
  }
  Shape expected = x;
  if (expected[static_cast<size_t>(axis)] >= 0) expected[static_cast<size_t>(axis)] = (x[static_cast<size_t>(axis)] + l.block - 1) / l.block;
  bool ok = scale.size() == x.size();
  for (size_t i = 0; ok && i < x.size(); ++i) ok = expected[i] < 0 || scale[i] == expected[i];
  if (!ok)
    shape_error(node, "scale must be " + to_string(expected) + " (blocks of " + std::to_string(l.block) + " along axis " +
                          std::to_string(axis) + "), got " + to_string(scale));
  return l;
}

// The parameters of a QuantizeLinear / DequantizeLinear, read once by prepare() when they are
// constants (or on every call when they are not).
struct CastParams : OpState {
  Shape scale_shape;
  std::vector<float> scale;
  std::vector<int32_t> zero_point;
};

CastParams cast_params(const Node& node, const Tensor& scale, const Tensor* zero_point) {
  CastParams p;
  p.scale_shape = scale.shape();
  p.scale.assign(scale.data<float>(), scale.data<float>() + scale.numel());
  for (size_t i = 0; i < p.scale.size(); ++i)
    if (!(p.scale[i] > 0.0f) || !std::isfinite(p.scale[i]))
      shape_error(node, "scale[" + std::to_string(i) + "] must be positive and finite, got " + std::to_string(p.scale[i]));
  p.zero_point.assign(p.scale.size(), 0);
  if (zero_point && zero_point->dtype() == DType::U8)
    std::copy_n(zero_point->data<uint8_t>(), zero_point->numel(), p.zero_point.begin());
  else if (zero_point)
    std::copy_n(zero_point->data<int8_t>(), zero_point->numel(), p.zero_point.begin());
  return p;
}

// Calls run(offset, count, parameter index) over x's elements, in runs that share one scale.
template <class Run>
void for_each_run(const CastLayout& l, int64_t n, const Run& run) {
  if (l.per_tensor) return run(0, n, 0);
  const int64_t blocks = l.block ? (l.dim + l.block - 1) / l.block : 0;
  for (int64_t o = 0; o < l.outer; ++o)
    for (int64_t d = 0; d < l.dim; ++d) {
      const int64_t row = (o * l.dim + d) * l.inner;
      if (l.block == 0) {
        run(row, l.inner, d);
        continue;
      }
      const int64_t base = (o * blocks + d / l.block) * l.inner;
      for (int64_t i = 0; i < l.inner; ++i) run(row + i, 1, base + i);
    }
}

// QuantizeLinear and DequantizeLinear (version 2): element-wise casts between `From` and `To`,
// inputs [x, scale f32, zero_point s8] as ONNX has them (DequantizeLinear's zero point may be
// left out: 0; it also reads u8 codes with a u8 zero point, e.g. image bytes with scale 1/255:
// the input scaling of the models lowbit builds); attributes axis (default 1) and block_size
// (default 0) place a scale that is not a scalar. Version 1 held one scale and zero point as
// attributes; upgrade() turns them into initializers. Not differentiable: no gradient flows
// through them and their scales are never trained.
template <DType From, DType To>
class ActivationCast : public InferenceOp {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, To == DType::S8 ? 3 : 2, 3);
    cast_layout(node, in[0], in[1], in.size() == 3 ? &in[2] : nullptr);
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    const bool u8_codes = From == DType::S8 && in[0] == DType::U8;
    if (!u8_codes) expect_dtype(node, in[0], From, "input");
    expect_dtype(node, in[1], DType::F32, "scale");
    if (in.size() == 3) expect_dtype(node, in[2], u8_codes ? DType::U8 : DType::S8, "zero_point");
    return {To};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!c[1] || (c.size() == 3 && !c[2])) return nullptr;
    return std::make_shared<CastParams>(cast_params(node, *c[1], c.size() == 3 ? c[2] : nullptr));
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    run(node, cast_params(node, *in[1], in.size() == 3 ? in[2] : nullptr), *in[0], *out[0]);
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace&) const override {
    if (!state) return forward(node, in, out);
    run(node, state_as<CastParams>(state), *in[0], *out[0]);
  }
  void upgrade(Node& node, int from_version, Graph& graph) const override {
    if (from_version != 1) return Op::upgrade(node, from_version, graph);
    const std::string scale = node.name + ".scale", zero_point = node.name + ".zero_point";
    add_upgrade_initializer(node, graph, scale, scalar_f32(node.attr_float("scale", 0.0)));
    add_upgrade_initializer(node, graph, zero_point, scalar_s8(node, node.attr_int("zero_point", 0), "zero_point"));
    node.inputs.resize(1);
    node.inputs.push_back(scale);
    node.inputs.push_back(zero_point);
    node.attributes.erase("scale");
    node.attributes.erase("zero_point");
  }

 protected:
  void run(const Node& node, const CastParams& p, const Tensor& x, Tensor& y) const {
    const CastLayout l = cast_layout(node, x.shape(), p.scale_shape, nullptr);
    prepare_output(y, To, x.shape());
    cast(l, p, x, y);
  }
  virtual void cast(const CastLayout& l, const CastParams& p, const Tensor& x, Tensor& y) const = 0;
};

class QuantizeLinear final : public ActivationCast<DType::F32, DType::S8> {
 public:
  QuantizeLinear() { traits_ = {.version = 2, .onnx = "QuantizeLinear", .boundary = OpTraits::Boundary::Quantize}; }
  std::string describe(const Node&, const OpState*) const override {
    return kernels::describe_avx2_or_reference("quantize_s8__avx2", "quantize_s8_ref");
  }

 private:
  void cast(const CastLayout& l, const CastParams& p, const Tensor& in, Tensor& out) const override {
    const float* x = in.data<float>();
    int8_t* q = out.data<int8_t>();
    if (l.per_tensor) {
      parallel_for(in.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
        quantize_s8(end - begin, x + begin, p.scale[0], p.zero_point[0], q + begin);
      });
      return;
    }
    for_each_run(l, in.numel(), [&](int64_t offset, int64_t count, int64_t i) {
      quantize_s8(count, x + offset, p.scale[static_cast<size_t>(i)], p.zero_point[static_cast<size_t>(i)], q + offset);
    });
  }
};

class DequantizeLinear final : public ActivationCast<DType::S8, DType::F32> {
 public:
  DequantizeLinear() { traits_ = {.version = 2, .onnx = "DequantizeLinear", .boundary = OpTraits::Boundary::Dequantize}; }
  std::string describe(const Node&, const OpState*) const override {
    return kernels::describe_avx2_or_reference("dequantize_s8__avx2 (u8 codes: dequantize_u8__avx2)",
                                               "dequantize_s8_ref (u8 codes: dequantize_u8_ref)");
  }

 private:
  void cast(const CastLayout& l, const CastParams& p, const Tensor& in, Tensor& out) const override {
    float* y = out.data<float>();
    if (in.dtype() == DType::U8) {
      const uint8_t* q = in.data<uint8_t>();
      if (l.per_tensor)  // image bytes: a whole batch in one call
        return parallel_for(in.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
          dequantize_u8(end - begin, q + begin, p.scale[0], p.zero_point[0], y + begin);
        });
      return for_each_run(l, in.numel(), [&](int64_t offset, int64_t count, int64_t i) {
        dequantize_u8(count, q + offset, p.scale[static_cast<size_t>(i)], p.zero_point[static_cast<size_t>(i)], y + offset);
      });
    }
    const int8_t* q = in.data<int8_t>();
    for_each_run(l, in.numel(), [&](int64_t offset, int64_t count, int64_t i) {
      dequantize_s8(count, q + offset, p.scale[static_cast<size_t>(i)], p.zero_point[static_cast<size_t>(i)], y + offset);
    });
  }
};

// Requantize: 8-bit codes on one grid to s8 codes on another, y = QuantizeLinear(DequantizeLinear(x))
// per tensor: inputs [x u8 or s8, x_scale f32 [], y_scale f32 [], y_zero_point s8 [], optional
// x_zero_point (x's type) []] (x's zero point last, as it is optional). The quantize pass puts it
// where image bytes meet the first integer layer: the input scaling and the layer's input
// quantization in one pass, without the float tensor between them. It runs the two casts' kernels
// on chunks that stay in L1, so it is bit-identical to the two ops. When the two grids differ by a
// whole number of codes (the same scale, as dynamic mode and most image inputs make them: every
// one of the 256 input codes is checked through those kernels), it adds that number to each byte
// instead, which is the same result in one integer pass. ONNX: DequantizeLinear, then
// QuantizeLinear.
class Requantize final : public InferenceOp {
 public:
  Requantize() { traits_ = {.boundary = OpTraits::Boundary::Quantize}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 4, 5);
    for (size_t i = 1; i < in.size(); ++i)
      if (!is_scalar(in[i])) shape_error(node, "scales and zero points must be scalars, got " + to_string(in[i]));
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::U8 && in[0] != DType::S8) shape_error(node, std::string("input must be u8 or s8, got ") + name_of(in[0]));
    expect_dtype(node, in[1], DType::F32, "x_scale");
    expect_dtype(node, in[2], DType::F32, "y_scale");
    expect_dtype(node, in[3], DType::S8, "y_zero_point");
    if (in.size() == 5) expect_dtype(node, in[4], in[0], "x_zero_point");
    return {DType::S8};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (std::any_of(c.begin() + 1, c.end(), [](const Tensor* t) { return t == nullptr; })) return nullptr;
    return std::make_shared<State>(params(node, c));
  }
  std::string describe(const Node&, const OpState* state) const override {
    if (state) {  // the input type is known from x_zero_point's, else both must take the integer path
      const State& s = state_as<State>(state);
      if (s.input_type >= 0 ? s.offset_only[s.input_type] : s.offset_only[0] && s.offset_only[1])
        return "requantize_offset (the grids differ by a whole number of codes: one integer add)";
    }
    return kernels::describe_avx2_or_reference("dequantize_u8__avx2 (or _s8) + quantize_s8__avx2 on 512-value chunks",
                                               "dequantize_u8_ref (or _s8) + quantize_s8_ref on 512-value chunks");
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    run(params(node, in), *in[0], *out[0]);
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace&) const override {
    if (!state) return forward(node, in, out);
    run(state_as<State>(state), *in[0], *out[0]);
  }

 private:
  struct State : OpState {
    CastParams from, to;
    // Per input type (u8, s8): whether y = x + offset for every input code (see above).
    bool offset_only[2] = {false, false};
    int32_t offset[2] = {0, 0};
    int input_type = -1;  // 0: u8, 1: s8, as x_zero_point says; -1 without one
  };
  static State params(const Node& node, std::span<const Tensor* const> c) {
    State s;
    s.from = cast_params(node, *c[1], c.size() == 5 ? c[4] : nullptr);
    s.to = cast_params(node, *c[2], c[3]);
    if (c.size() == 5) s.input_type = c[4]->dtype() == DType::U8 ? 0 : 1;
    // Every input code through the two kernels (the same ones run() uses, elementwise).
    for (int type = 0; type < 2; ++type) {  // 0: u8, 1: s8
      float values[256];
      int8_t codes[256];
      uint8_t bytes[256];
      for (int v = 0; v < 256; ++v) bytes[v] = static_cast<uint8_t>(type == 0 ? v : v - 128);
      if (type == 0)
        dequantize_u8(256, bytes, s.from.scale[0], s.from.zero_point[0], values);
      else
        dequantize_s8(256, reinterpret_cast<const int8_t*>(bytes), s.from.scale[0], s.from.zero_point[0], values);
      quantize_s8(256, values, s.to.scale[0], s.to.zero_point[0], codes);
      const int32_t first = type == 0 ? 0 : -128;  // the input code of entry v is first + v
      s.offset[type] = codes[0] - first;
      bool exact = true;
      for (int v = 0; v < 256; ++v) exact = exact && codes[v] == first + v + s.offset[type];
      s.offset_only[type] = exact;
    }
    return s;
  }
  static void run(const State& s, const Tensor& x, Tensor& y) {
    prepare_output(y, DType::S8, x.shape());
    const int type = x.dtype() == DType::U8 ? 0 : 1;
    if (s.offset_only[type]) {  // one integer pass; no code leaves [-128, 127] (checked above)
      const int64_t n = x.numel();
      const uint8_t* in = type == 0 ? x.data<uint8_t>() : reinterpret_cast<const uint8_t*>(x.data<int8_t>());
      uint8_t* out = reinterpret_cast<uint8_t*>(y.data<int8_t>());
      const auto add = static_cast<uint8_t>(s.offset[type]);  // modulo 256: the same bytes as the signed sum
      parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
        // Locals: byte stores may alias anything, so captured values would be reloaded after
        // each one and the loop not vectorized.
        const uint8_t* __restrict src = in + begin;
        uint8_t* __restrict dst = out + begin;
        const uint8_t a = add;
        for (int64_t i = 0, count = end - begin; i < count; ++i) dst[i] = static_cast<uint8_t>(src[i] + a);
      });
      return;
    }
    const float xs = s.from.scale[0], ys = s.to.scale[0];
    const int32_t xz = s.from.zero_point[0], yz = s.to.zero_point[0];
    const bool bytes = x.dtype() == DType::U8;
    int8_t* q = y.data<int8_t>();
    parallel_for(x.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
      float chunk[512];
      for (int64_t i = begin; i < end; i += 512) {
        const int64_t n = std::min<int64_t>(512, end - i);
        if (bytes)
          dequantize_u8(n, x.data<uint8_t>() + i, xs, xz, chunk);
        else
          dequantize_s8(n, x.data<int8_t>() + i, xs, xz, chunk);
        quantize_s8(n, chunk, ys, yz, q + i);
      }
    });
  }
};

// Shared checks for the weight inputs of QDense and DynamicQDense:
// [x, weight codes [U, row_bytes * 8 / bits], weight_scale f32 [U], ...].
int64_t check_weights(const Node& node, std::span<const Shape> in) {
  const int64_t features = node.attr_int("in_features", -1);
  if (features < 1) shape_error(node, "attribute 'in_features' must be a positive integer");
  if (in[0].size() < 2 || (in[0].back() >= 0 && in[0].back() != features))
    shape_error(node, "input must be [batch, ..., " + std::to_string(features) + "], got " + to_string(in[0]));
  if (in[1].size() != 2) shape_error(node, "weight codes must be [out, packed in], got " + to_string(in[1]));
  if (in[2].size() != 1 || in[2][0] != in[1][0])
    shape_error(node, "weight_scale must be [" + std::to_string(in[1][0]) + "], got " + to_string(in[2]));
  return in[1][0];
}

// x [..., features] as the rows of a GEMM, and the output shape [..., units].
int64_t rows_of(const Node& node, const Tensor& x, int64_t features) {
  if (x.rank() < 2 || x.dim(-1) != features)
    shape_error(node, "input " + to_string(x.shape()) + " does not end in " + std::to_string(features) + " features");
  return leading_rows(x.shape());
}
Shape with_last(Shape shape, int64_t last) {
  shape.back() = last;
  return shape;
}

// ---- QDense (version 2) ------------------------------------------------------------------
// Inputs (integer_inputs.h): x s8 [N, K], weight codes [U, .], weight_scale f32 [U],
// weight_zero_point s32 [U], x_scale f32 [], x_zero_point s8 [], then y_scale f32 [] and
// y_zero_point s8 [] for s8 output (absent: f32 output), then an optional bias s32 [U] at scale
// x_scale * weight_scale[u]. Attributes: in_features, activation ("none"/"relu").
struct QDenseState : IntegerLayerState {
  QWeights weights;
  int64_t features = 0;
};

class QDense final : public PreparedInferenceOp {
 public:
  QDense() { traits_ = {.version = 2, .onnx = "QGemm", .float_op = "Dense"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, IntegerLayerInputs::min_count, IntegerLayerInputs::max_count);
    const int64_t units = check_weights(node, in);
    if (in[3].size() != 1 || in[3][0] != units) shape_error(node, "weight_zero_point must be [" + std::to_string(units) + "]");
    integer_layer_inputs(node, in, units);
    return {with_last(in[0], units)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {integer_layer_dtype(node, in)};
  }
  void upgrade(Node& node, int from_version, Graph& graph) const override {
    if (from_version != 1) return Op::upgrade(node, from_version, graph);
    upgrade_integer_layer(node, graph);
  }

  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QDenseState>();
    const Tensor& codes = *c[1];
    s->features = node.attr_int("in_features", -1);
    check_weight_tensor(node, codes, s->features);
    const int64_t units = codes.dim(0);
    s->weights = QWeights::pack(codes, units, s->features);
    prepare_output_stage(node, s->weights.row_sums(), c, s->features, *s);
    return s;
  }

  std::string describe(const Node&, const OpState* state) const override {
    if (!state) return "prepared on every call (weights are not constants)";
    const QWeights& w = state_as<QDenseState>(state).weights;
    return kernels::describe_qgemm(w.storage(), w.vnni_layout().defined(), w.kernel_layout().defined());
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace& workspace) const override {
    if (!state) return forward(node, in, out);
    const auto& s = state_as<QDenseState>(state);
    const Tensor& x = *in[0];
    const int64_t batch = rows_of(node, x, s.features), units = s.weights.n();
    const Shape y_shape = with_last(x.shape(), units);
    QOutputStage stage;
    stage.column_offset = s.column_offset.data();
    if (s.has_weight_zero_point) {
      int32_t* row_sums = workspace.take<int32_t>(static_cast<size_t>(batch));
      row_sums_s8(batch, s.features, x.data<int8_t>(), s.features, row_sums);
      stage.weight_zero_point = s.weight_zero_point.data();
      stage.row_offset = row_sums;
    }
    if (s.f32_output) {
      prepare_output(*out[0], DType::F32, y_shape);
      stage.column_scale = s.column_scale.data();
      stage.relu = s.relu;
      qgemm_s8_f32(batch, x.data<int8_t>(), s.features, s.weights, stage, out[0]->data<float>(), units);
    } else {
      prepare_output(*out[0], DType::S8, y_shape);
      stage.multiplier = s.multiplier.data();
      stage.output_zero_point = s.output_zero_point;
      stage.clamp_min = s.clamp_min;
      stage.clamp_max = s.clamp_max;
      qgemm_s8(batch, x.data<int8_t>(), s.features, s.weights, stage, out[0]->data<int8_t>(), units);
    }
  }
};

// ---- DynamicQDense -------------------------------------------------------------------------
// Inputs: x f32 [N, K], weight codes [U, .] (symmetric: zero point 0), weight_scale f32 [U],
//         optional bias f32 [U]. Attributes: in_features, activation, granularity ("row" or
//         "tensor": one activation range per row or per batch).
struct DynamicState : OpState {
  QWeights weights;
  std::vector<int32_t> zero_column_offset;
  std::vector<float> weight_scale, bias;
  bool relu = false, per_row = true;
  int64_t features = 0;
};

class DynamicQDense final : public PreparedInferenceOp {
 public:
  DynamicQDense() { traits_ = {.onnx = "MatMulInteger", .float_op = "Dense", .dynamic = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 4);
    const int64_t units = check_weights(node, in);
    if (in.size() == 4 && (in[3].size() != 1 || in[3][0] != units)) shape_error(node, "bias must be [" + std::to_string(units) + "]");
    per_row_ranges(node);
    return {with_last(in[0], units)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {dynamic_layer_dtype(node, in)};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<DynamicState>();
    s->features = node.attr_int("in_features", -1);
    check_weight_tensor(node, *c[1], s->features);
    const int64_t units = c[1]->dim(0);
    s->weights = QWeights::pack(*c[1], units, s->features);
    s->zero_column_offset.assign(static_cast<size_t>(units), 0);
    s->weight_scale.assign(c[2]->data<float>(), c[2]->data<float>() + units);
    if (c.size() == 4) s->bias.assign(c[3]->data<float>(), c[3]->data<float>() + units);
    s->relu = relu_of(node);
    s->per_row = per_row_ranges(node);
    return s;
  }
  std::string describe(const Node&, const OpState* state) const override {
    if (!state) return "prepared on every call (weights are not constants)";
    const QWeights& w = state_as<DynamicState>(state).weights;
    return kernels::describe_qgemm(w.storage(), w.vnni_layout().defined(), w.kernel_layout().defined());
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace& workspace) const override {
    if (!state) return forward(node, in, out);
    const auto& s = state_as<DynamicState>(state);
    const Tensor& x = *in[0];
    const int64_t batch = rows_of(node, x, s.features), units = s.weights.n(), k = s.features;
    // Quantize the activations: affine s8 per row (or per batch) from their observed range.
    int8_t* code_data = workspace.take<int8_t>(static_cast<size_t>(batch * k));
    float* scale_data = workspace.take<float>(static_cast<size_t>(batch));
    int32_t* zero_data = workspace.take<int32_t>(static_cast<size_t>(batch));
    kernels::quantize_images_s8(x.data<float>(), batch, k, s.per_row, code_data, zero_data, scale_data);
    // acc = sum (a - za[m]) * w = raw - za[m] * sum(w[n]): the row-sum hook of the output stage
    // with the weights' row sums in the "weight zero point" slot.
    QOutputStage stage;
    stage.column_offset = s.zero_column_offset.data();
    stage.weight_zero_point = s.weights.row_sums().data();
    stage.row_offset = zero_data;
    stage.row_scale = scale_data;
    stage.column_scale = s.weight_scale.data();
    stage.bias = s.bias.empty() ? nullptr : s.bias.data();
    stage.relu = s.relu;
    prepare_output(*out[0], DType::F32, with_last(x.shape(), units));
    qgemm_s8_f32(batch, code_data, k, s.weights, stage, out[0]->data<float>(), units);
  }
};

// ---- BlockQDense ---------------------------------------------------------------------------
// Weights in blocks of block_size along K, each block with an fp16 scale and a zero point
// (kernels/blockq.h has the storage and the arithmetic):
// Inputs: x f32 [N, K]; codes u8 [U, blocks * block_bytes]; scale f16 [U, blocks]; with scheme
//         "affine", zero_point u8 [U, blocks]; optional bias f32 [U].
// Attributes: in_features (K), bits (2, 3, 4), block_size (32, 64, 128), scheme ("symmetric":
//         zero point 2^(bits-1); "affine"), activation ("none"/"relu"), input_quantization
//         ("s8_block": x quantized per block to int8 at run time, the default; "none": f32
//         activations, weight-only).
struct BlockDenseLayout {
  int64_t features = 0, blocks = 0, block = 0;
  int bits = 0;
  bool affine = false;
  size_t bias = 0;  // index of the bias input (0: none)
};

BlockDenseLayout block_dense_layout(const Node& node, size_t inputs) {
  BlockDenseLayout l;
  l.features = node.attr_int("in_features", -1);
  if (l.features < 1) shape_error(node, "attribute 'in_features' must be a positive integer");
  l.bits = static_cast<int>(node.attr_int("bits", 4));
  if (l.bits < 2 || l.bits > 4) shape_error(node, "attribute 'bits' must be 2, 3 or 4, got " + std::to_string(l.bits));
  l.block = node.attr_int("block_size", 32);
  if (l.block != 32 && l.block != 64 && l.block != 128)
    shape_error(node, "attribute 'block_size' must be 32, 64 or 128, got " + std::to_string(l.block));
  const std::string scheme = node.attr_string("scheme", "symmetric");
  if (scheme != "symmetric" && scheme != "affine") shape_error(node, "attribute 'scheme' must be \"symmetric\" or \"affine\"");
  l.affine = scheme == "affine";
  const std::string input = node.attr_string("input_quantization", "s8_block");
  if (input != "s8_block" && input != "none") shape_error(node, "attribute 'input_quantization' must be \"s8_block\" or \"none\"");
  const size_t first_optional = l.affine ? 4 : 3;
  if (inputs < first_optional || inputs > first_optional + 1)
    shape_error(node, "takes " + std::to_string(first_optional) + " inputs (x, codes, scale" + (l.affine ? ", zero_point" : "") +
                          ") and an optional bias, got " + std::to_string(inputs));
  l.bias = inputs == first_optional + 1 ? first_optional : 0;
  l.blocks = (l.features + l.block - 1) / l.block;
  return l;
}

struct BlockDenseState : OpState {
  BlockWeights weights;
  std::vector<float> bias;
  BlockOutput output;
};

class BlockQDense final : public PreparedInferenceOp {
 public:
  BlockQDense() { traits_ = {.float_op = "Dense", .dynamic = true, .block_weights = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    const BlockDenseLayout l = block_dense_layout(node, in.size());
    if (in[0].size() < 2 || (in[0].back() >= 0 && in[0].back() != l.features))
      shape_error(node, "input must be [batch, ..., " + std::to_string(l.features) + "], got " + to_string(in[0]));
    if (in[1].size() != 2 || in[1][1] != l.blocks * block_bytes(l.bits, l.block))
      shape_error(node, "codes must be [units, " + std::to_string(l.blocks * block_bytes(l.bits, l.block)) + "], got " +
                            to_string(in[1]));
    const int64_t units = in[1][0];
    if (in[2] != Shape{units, l.blocks})
      shape_error(node, "scale must be [" + std::to_string(units) + ", " + std::to_string(l.blocks) + "], got " + to_string(in[2]));
    if (l.affine && in[3] != in[2]) shape_error(node, "zero_point must have the shape of scale, got " + to_string(in[3]));
    if (l.bias && in[l.bias] != Shape{units}) shape_error(node, "bias must be [" + std::to_string(units) + "], got " + to_string(in[l.bias]));
    return {with_last(in[0], units)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    const BlockDenseLayout l = block_dense_layout(node, in.size());
    expect_dtype(node, in[0], DType::F32, "input");
    expect_dtype(node, in[1], DType::U8, "codes");
    expect_dtype(node, in[2], DType::F16, "scale");
    if (l.affine) expect_dtype(node, in[3], DType::U8, "zero_point");
    if (l.bias) expect_dtype(node, in[l.bias], DType::F32, "bias");
    return {DType::F32};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    const BlockDenseLayout l = block_dense_layout(node, c.size());
    auto s = std::make_shared<BlockDenseState>();
    const Tensor& codes = *c[1];
    const int64_t units = codes.dim(0);
    const auto span_of = [](const Tensor& t) { return std::span(static_cast<const uint8_t*>(t.raw()), t.nbytes()); };
    std::span<const uint8_t> zero_points;
    if (l.affine) zero_points = span_of(*c[3]);
    const std::span<const uint16_t> scales(static_cast<const uint16_t*>(c[2]->raw()), static_cast<size_t>(c[2]->numel()));
    try {
      s->weights = BlockWeights::pack(span_of(codes), scales, zero_points, units, l.features, l.bits, l.block);
    } catch (const Error& e) {
      shape_error(node, e.what());
    }
    for (size_t i = 0; i < scales.size(); ++i) {
      const float d = f16_to_f32(scales[i]);
      if (!(d >= 0.0f) || !std::isfinite(d)) shape_error(node, "scale[" + std::to_string(i) + "] must be finite and not negative");
    }
    if (l.bias) s->bias.assign(c[l.bias]->data<float>(), c[l.bias]->data<float>() + units);
    s->output.bias = s->bias.empty() ? nullptr : s->bias.data();
    s->output.relu = relu_of(node);
    s->output.input = node.attr_string("input_quantization", "s8_block") == "none" ? InputQuantization::None : InputQuantization::S8Block;
    return s;
  }
  std::string describe(const Node&, const OpState* state) const override {
    if (!state) return "prepared on every call (weights are not constants)";
    const auto& s = state_as<BlockDenseState>(state);
    return describe_block_gemm(s.weights, s.output);
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace& workspace) const override {
    if (!state) return forward(node, in, out);
    const auto& s = state_as<BlockDenseState>(state);
    const Tensor& x = *in[0];
    const int64_t batch = rows_of(node, x, s.weights.k()), units = s.weights.n();
    prepare_output(*out[0], DType::F32, with_last(x.shape(), units));
    block_gemm(batch, x.data<float>(), s.weights.k(), s.weights, s.output, out[0]->data<float>(), units, workspace);
  }
};

}  // namespace

void check_weight_tensor(const Node& node, const Tensor& codes, int64_t k) {
  const DType d = codes.dtype();
  if (d != DType::S8 && d != DType::S4 && d != DType::U4 && d != DType::S2 && d != DType::U2)
    shape_error(node, std::string("weight codes must be s8, s4, u4, s2 or u2, got ") + name_of(d));
  const int64_t need = codes.dim(0) * packed_row_bytes(d, k);
  if (static_cast<int64_t>(codes.nbytes()) < need)
    shape_error(node, "weight codes hold " + std::to_string(codes.nbytes()) + " bytes, " + std::to_string(need) + " needed");
}

IntegerLayerInputs integer_layer_inputs(const Node& node, std::span<const Shape> in, int64_t units) {
  const IntegerLayerInputs l = IntegerLayerInputs::of(in.size());
  auto scalar = [&](size_t i, const char* what) {
    if (!(in[i].empty() || in[i] == Shape{1})) shape_error(node, std::string(what) + " must be a scalar, got " + to_string(in[i]));
  };
  scalar(l.x_scale, "x_scale");
  scalar(l.x_zero_point, "x_zero_point");
  if (l.s8_output()) {
    scalar(l.y_scale, "y_scale");
    scalar(l.y_zero_point, "y_zero_point");
  }
  if (l.has_bias() && in[l.bias] != Shape{units})
    shape_error(node, "bias must be [" + std::to_string(units) + "], got " + to_string(in[l.bias]));
  return l;
}

DType integer_layer_dtype(const Node& node, std::span<const DType> in) {
  const IntegerLayerInputs l = IntegerLayerInputs::of(in.size());
  expect_dtype(node, in[l.x], DType::S8, "input");
  expect_dtype(node, in[l.weight_scale], DType::F32, "weight_scale");
  expect_dtype(node, in[l.weight_zero_point], DType::S32, "weight_zero_point");
  expect_dtype(node, in[l.x_scale], DType::F32, "x_scale");
  expect_dtype(node, in[l.x_zero_point], DType::S8, "x_zero_point");
  if (l.s8_output()) {
    expect_dtype(node, in[l.y_scale], DType::F32, "y_scale");
    expect_dtype(node, in[l.y_zero_point], DType::S8, "y_zero_point");
  }
  if (l.has_bias()) expect_dtype(node, in[l.bias], DType::S32, "bias");
  return l.s8_output() ? DType::S8 : DType::F32;
}

DType dynamic_layer_dtype(const Node& node, std::span<const DType> in) {
  expect_dtype(node, in[0], DType::F32, "input");
  expect_dtype(node, in[2], DType::F32, "weight_scale");
  if (in.size() == 4) expect_dtype(node, in[3], DType::F32, "bias");
  return DType::F32;
}

bool per_row_ranges(const Node& node) {
  const std::string g = node.attr_string("granularity", "row");
  if (g != "row" && g != "tensor") shape_error(node, "attribute 'granularity' must be \"row\" or \"tensor\"");
  return g == "row";
}

void prepare_output_stage(const Node& node, std::span<const int32_t> row_sums, std::span<const Tensor* const> c, int64_t k,
                          IntegerLayerState& s) {
  const IntegerLayerInputs l = IntegerLayerInputs::of(c.size());
  const float* w_scale = c[l.weight_scale]->data<float>();
  const int32_t* w_zero = c[l.weight_zero_point]->data<int32_t>();
  const int32_t* bias = l.has_bias() ? c[l.bias]->data<int32_t>() : nullptr;
  s.relu = relu_of(node);
  s.f32_output = !l.s8_output();
  const QuantParams in = activation_params(node, *c[l.x_scale], *c[l.x_zero_point], "x_scale / x_zero_point");
  s.input_zero_point = in.zero_point[0];
  QuantParams out;
  if (!s.f32_output) {
    out = activation_params(node, *c[l.y_scale], *c[l.y_zero_point], "y_scale / y_zero_point");
    s.output_zero_point = out.zero_point[0];
    s.clamp_min = s.relu ? std::max(out.zero_point[0], -128) : -128;
  }
  const int64_t za = in.zero_point[0];
  for (size_t n = 0; n < row_sums.size(); ++n) {
    if (!(w_scale[n] > 0.0f) || !std::isfinite(w_scale[n]))
      shape_error(node, "weight_scale[" + std::to_string(n) + "] must be positive and finite");
    const int64_t offset = (bias ? bias[n] : 0) - za * row_sums[n] + k * za * w_zero[n];
    s.column_offset.push_back(static_cast<int32_t>(std::clamp<int64_t>(offset, INT32_MIN, INT32_MAX)));
    s.weight_zero_point.push_back(w_zero[n]);
    s.has_weight_zero_point |= w_zero[n] != 0;
    const double real_scale = static_cast<double>(in.scale[0]) * w_scale[n];
    if (s.f32_output)
      s.column_scale.push_back(static_cast<float>(real_scale));
    else
      s.multiplier.push_back(FixedPointMultiplier::from(real_scale / out.scale[0]));
  }
}

void upgrade_integer_layer(Node& node, Graph& graph) {
  // Version 1: [x, codes, weight_scale, weight_zero_point, optional bias] with the activation
  // parameters in attributes; "output" was "s8" (default, with output_scale / output_zero_point) or "f32".
  if (node.inputs.size() < 4 || node.inputs.size() > 5)
    shape_error(node, "version 1 takes 4 or 5 inputs, got " + std::to_string(node.inputs.size()));
  const std::string kind = node.attr_string("output", "s8");
  if (kind != "s8" && kind != "f32") shape_error(node, "attribute 'output' must be \"s8\" or \"f32\"");
  std::vector<std::string> inputs(node.inputs.begin(), node.inputs.begin() + 4);
  auto add = [&](const std::string& suffix, Tensor t) {
    add_upgrade_initializer(node, graph, node.name + suffix, std::move(t));
    inputs.push_back(node.name + suffix);
  };
  add(".x_scale", scalar_f32(node.attr_float("input_scale", 0.0)));
  add(".x_zero_point", scalar_s8(node, node.attr_int("input_zero_point", 0), "input_zero_point"));
  if (kind == "s8") {
    add(".y_scale", scalar_f32(node.attr_float("output_scale", 0.0)));
    add(".y_zero_point", scalar_s8(node, node.attr_int("output_zero_point", 0), "output_zero_point"));
  }
  if (node.inputs.size() == 5) inputs.push_back(node.inputs[4]);
  node.inputs = std::move(inputs);
  for (const char* key : {"input_scale", "input_zero_point", "output", "output_scale", "output_zero_point"})
    node.attributes.erase(key);
}

void register_qconv(const Registrar& add);  // qconv.cpp: QConv2D

void register_quantized(const Registrar& add) {
  register_qconv(add);
  add("QuantizeLinear", std::make_unique<QuantizeLinear>());
  add("DequantizeLinear", std::make_unique<DequantizeLinear>());
  add("Requantize", std::make_unique<Requantize>());
  add("QDense", std::make_unique<QDense>());
  add("DynamicQDense", std::make_unique<DynamicQDense>());
  add("BlockQDense", std::make_unique<BlockQDense>());
}

}  // namespace lowbit::ops
