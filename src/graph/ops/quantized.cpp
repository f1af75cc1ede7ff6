// Quantized ops: QuantizeLinear and DequantizeLinear (the boundaries between float and integer
// values), QDense (static, integer-only dense layer) and DynamicQDense (weights quantized
// offline, activations quantized per row at run time). docs/design/quantization.md derives the
// arithmetic; docs/ops.md lists inputs and attributes.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/integer_layer.h"
#include "kernels/implementation.h"
#include "kernels/qconv.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {

QuantParams activation_params(const Node& node, const char* scale_key, const char* zero_point_key) {
  QuantParams p{8, true, QScheme::Affine, false, -1, {static_cast<float>(node.attr_float(scale_key, 0.0))},
                {static_cast<int32_t>(node.attr_int(zero_point_key, 0))}};
  p.validate("node '" + node.name + "' (" + node.op + ") " + scale_key);
  return p;
}

bool f32_output(const Node& node) {
  const std::string kind = node.attr_string("output", "s8");
  if (kind != "s8" && kind != "f32") shape_error(node, "attribute 'output' must be \"s8\" or \"f32\"");
  if (kind == "s8") activation_params(node, "output_scale", "output_zero_point");
  return kind == "f32";
}

bool relu_of(const Node& node) { return activation_of(node) == Activation::Relu; }

namespace {


// QuantizeLinear and DequantizeLinear: element-wise casts between `From` and `To` with the
// activation parameters in the attributes `scale` and `zero_point`, read once by prepare().
template <DType From, DType To>
class ActivationCast : public InferenceOp {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    activation_params(node, "scale", "zero_point");
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    expect_dtype(node, in[0], From, "input");
    return {To};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const>) const override {
    auto s = std::make_shared<State>();
    s->params = activation_params(node, "scale", "zero_point");
    return s;
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    cast(activation_params(node, "scale", "zero_point"), *in[0], *out[0]);
  }
  void forward_prepared(const Node&, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace&) const override {
    cast(state_as<State>(state).params, *in[0], *out[0]);
  }

 protected:
  struct State : OpState {
    QuantParams params;
  };
  virtual void cast(const QuantParams& p, const Tensor& x, Tensor& y) const = 0;
};

class QuantizeLinear final : public ActivationCast<DType::F32, DType::S8> {
 public:
  QuantizeLinear() { traits_ = {.onnx = "QuantizeLinear", .boundary = OpTraits::Boundary::Quantize}; }
  std::string describe(const Node&, const OpState*) const override {
    return kernels::describe_avx2_or_reference("quantize_s8__avx2", "quantize_s8_ref");
  }

 private:
  void cast(const QuantParams& p, const Tensor& in, Tensor& out) const override {
    prepare_output(out, DType::S8, in.shape());
    const float* x = in.data<float>();
    int8_t* q = out.data<int8_t>();
    parallel_for(in.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      quantize_s8(end - begin, x + begin, p.scale[0], p.zero_point[0], q + begin);
    });
  }
};

class DequantizeLinear final : public ActivationCast<DType::S8, DType::F32> {
 public:
  DequantizeLinear() { traits_ = {.onnx = "DequantizeLinear", .boundary = OpTraits::Boundary::Dequantize}; }
  std::string describe(const Node&, const OpState*) const override {
    return kernels::describe_avx2_or_reference("dequantize_s8__avx2", "dequantize_s8_ref");
  }

 private:
  void cast(const QuantParams& p, const Tensor& in, Tensor& out) const override {
    prepare_output(out, DType::F32, in.shape());
    dequantize_s8(in.numel(), in.data<int8_t>(), p.scale[0], p.zero_point[0], out.data<float>());
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

// ---- QDense --------------------------------------------------------------------------------
// Inputs: x s8 [N, K], weight codes [U, .], weight_scale f32 [U], weight_zero_point s32 [U],
//         optional bias s32 [U] at scale input_scale * weight_scale[u].
// Attributes: in_features, input_scale, input_zero_point, activation ("none"/"relu"),
//             output ("s8" with output_scale, output_zero_point; or "f32").
struct QDenseState : IntegerLayerState {
  QWeights weights;
  int64_t features = 0;
};

class QDense final : public PreparedInferenceOp {
 public:
  QDense() { traits_ = {.onnx = "QGemm", .float_op = "Dense"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 4, 5);
    const int64_t units = check_weights(node, in);
    if (in[3].size() != 1 || in[3][0] != units) shape_error(node, "weight_zero_point must be [" + std::to_string(units) + "]");
    if (in.size() == 5 && (in[4].size() != 1 || in[4][0] != units)) shape_error(node, "bias must be [" + std::to_string(units) + "]");
    f32_output(node);
    activation_params(node, "input_scale", "input_zero_point");
    return {with_last(in[0], units)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {integer_layer_dtype(node, in)};
  }

  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QDenseState>();
    const Tensor& codes = *c[1];
    s->features = node.attr_int("in_features", -1);
    check_weight_tensor(node, codes, s->features);
    const int64_t units = codes.dim(0);
    s->weights = QWeights::pack(codes, units, s->features);
    prepare_output_stage(node, s->weights.row_sums(), c[2]->data<float>(), c[3]->data<int32_t>(), c.size() == 5 ? c[4]->data<int32_t>() : nullptr,
                         s->features, *s);
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

}  // namespace

void check_weight_tensor(const Node& node, const Tensor& codes, int64_t k) {
  const DType d = codes.dtype();
  if (d != DType::S8 && d != DType::S4 && d != DType::U4 && d != DType::S2 && d != DType::U2)
    shape_error(node, std::string("weight codes must be s8, s4, u4, s2 or u2, got ") + name_of(d));
  const int64_t need = codes.dim(0) * packed_row_bytes(d, k);
  if (static_cast<int64_t>(codes.nbytes()) < need)
    shape_error(node, "weight codes hold " + std::to_string(codes.nbytes()) + " bytes, " + std::to_string(need) + " needed");
}

DType integer_layer_dtype(const Node& node, std::span<const DType> in) {
  expect_dtype(node, in[0], DType::S8, "input");
  expect_dtype(node, in[2], DType::F32, "weight_scale");
  expect_dtype(node, in[3], DType::S32, "weight_zero_point");
  if (in.size() == 5) expect_dtype(node, in[4], DType::S32, "bias");
  return f32_output(node) ? DType::F32 : DType::S8;
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

void prepare_output_stage(const Node& node, std::span<const int32_t> row_sums, const float* w_scale,
                          const int32_t* w_zero, const int32_t* bias, int64_t k, IntegerLayerState& s) {
  s.relu = relu_of(node);
  s.f32_output = f32_output(node);
  const QuantParams in = activation_params(node, "input_scale", "input_zero_point");
  s.input_zero_point = in.zero_point[0];
  QuantParams out;
  if (!s.f32_output) {
    out = activation_params(node, "output_scale", "output_zero_point");
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

void register_qconv(const Registrar& add);  // qconv.cpp: QConv2D

void register_quantized(const Registrar& add) {
  register_qconv(add);
  add("QuantizeLinear", std::make_unique<QuantizeLinear>());
  add("DequantizeLinear", std::make_unique<DequantizeLinear>());
  add("QDense", std::make_unique<QDense>());
  add("DynamicQDense", std::make_unique<DynamicQDense>());
}

}  // namespace lowbit::ops
