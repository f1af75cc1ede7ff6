// QConv2D: integer convolution on NCHW s8 activations (docs/ops.md lists inputs and attributes,
// docs/quantization.md the arithmetic; it is QDense's, with K = in_channels / group * kh * kw),
// and DynamicQConv2D (f32 input quantized per image at run time, then the same integer
// convolution; at the end of this file).
//
// Inputs (version 2; integer_inputs.h has the order): x s8 [N, C, H, W]; weight codes [OC, .]
//         (rows of K = C/group*kh*kw codes in (c, ki, kj) order, s8 or packed s4/u4/s2/u2 as
//         QDense's); weight_scale f32 [OC]; weight_zero_point s32 [OC]; x_scale f32 [] and
//         x_zero_point s8 []; y_scale f32 [] and y_zero_point s8 [] for s8 output (absent: f32
//         output); optional bias s32 [OC] at scale x_scale * weight_scale[oc].
// Attributes: in_channels (C), kernel_shape, strides, pads, dilations, group (output channel oc
//             reads the C/group input channels of group oc / (OC/group); group = C is depthwise),
//             activation ("none"/"relu"). Version 1 held the activation parameters as attributes
//             (upgraded on load).
//
// The compute is kernels/qconv.h (the reference loops, im2row + qgemm, the direct kernels and the
// layouts they read); this file holds the ops: attributes, shapes, the prepared state and the
// ordered list kImplementations (fastest first; chosen once when the node is prepared, which also
// packs the weights for the chosen one only):
//   - qconv_direct_s8__avx512vnni / __avx2 (kernels::qconv2d_s8_direct), for stride_w 1 and
//     K <= 32 (first layers on few channels, depthwise layers), where it beats im2row.
//   - qconv_im2row_qgemm (kernels::qconv2d_s8_im2row): zero-padded NHWC copy, im2row, one integer
//     GEMM per group, transpose to NCHW.
//   - qconv2d_ref (kernels::qconv2d_s8_ref): the normative direct loops. Used when the active ISA
//     is Isa::Reference.
// All produce identical bytes (the integer sums are exact; the output stage is qgemm's).
#include <cmath>
#include <initializer_list>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "graph/ops/integer_layer.h"
#include "kernels/implementation.h"
#include "kernels/qconv.h"
#include "kernels/qconv_direct.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// The geometry, from the input shape and the attributes (the weights are packed codes).
ConvGeometry qconv_geometry(const Node& node, const Shape& x, int64_t out_channels) {
  const int64_t groups = node.attr_int("group", 1);
  if (groups < 1) shape_error(node, "attribute 'group' must be positive, got " + std::to_string(groups));
  const int64_t in_channels = node.attr_int("in_channels", -1);
  if (in_channels < 1) shape_error(node, "attribute 'in_channels' must be a positive integer");
  auto it = node.attributes.find("kernel_shape");
  if (it == node.attributes.end() || !it->second.is_ints() || it->second.as_ints().size() != 2)
    shape_error(node, "attribute 'kernel_shape' [kh, kw] is required");
  const std::vector<int64_t>& kernel = it->second.as_ints();
  if (x.size() == 4 && x[1] != in_channels)
    shape_error(node, "input " + to_string(x) + " must have " + std::to_string(in_channels) + " channels (in_channels)");
  if (in_channels % groups)
    shape_error(node, "group " + std::to_string(groups) + " must divide in_channels (" + std::to_string(in_channels) + ")");
  return conv_geometry(node, x, {out_channels, in_channels / groups, kernel[0], kernel[1]});
}

struct QConvState : IntegerLayerState {
  std::vector<int32_t> codes;  // unpacked [OC, K] in (c, ki, kj) order, for the reference
  std::vector<int32_t> bias;   // QConv2D: int32 bias
  int64_t k = 0;               // per group
  std::vector<QWeights> group_weights;  // per group: [OC/group, K] in (ki, kj, c) order, for the fast path
  std::vector<int32_t> direct_weights;  // K <= kDirectConvMaxK: the direct kernels' weight pairs
  // DynamicQConv2D: activations quantized per call, weights symmetric.
  bool dynamic = false, per_image = true;
  std::vector<int32_t> weight_row_sums;    // sum of each output channel's codes
  std::vector<float> weight_scale, bias_f32;
  kernels::Choice implementation;          // chosen once, when prepared (kImplementations)
};

// The implementations, fastest first (the file comment describes them). What decides is known
// when the node is prepared: the reduction length K, the horizontal stride and the ISA.
struct QConvProblem {
  int64_t k = 0, stride_w = 1;
};
const char* direct_shape_declines(const QConvProblem& p) {
  if (p.stride_w != 1) return "stride_w is not 1";
  if (p.k > kernels::kDirectConvMaxK) return "K = C/group*kh*kw is above 32, where im2row + GEMM is faster";
  return nullptr;
}
enum QConvImplementation { kDirectVnni, kDirectAvx2, kIm2row, kReference };
constexpr kernels::Implementation<QConvProblem> kImplementations[] = {
    {"qconv_direct_s8__avx512vnni",
     [](const QConvProblem& p) {
       const char* why = kernels::isa_declines(Isa::Avx512Vnni);
       return why ? why : direct_shape_declines(p);
     }},
    {"qconv_direct_s8__avx2",
     [](const QConvProblem& p) {
       const char* why = kernels::isa_declines(Isa::Avx2);
       return why ? why : direct_shape_declines(p);
     }},
    {"qconv_im2row_qgemm", [](const QConvProblem&) { return kernels::isa_declines(Isa::Avx2); }},
    {"qconv2d_ref", nullptr}};

// The output stage of all output channels: QConv2D's prepared constants, or DynamicQConv2D's
// (acc = raw - zx * sum(w), through the row-offset hook with the weights' row sums in the
// weight-zero-point slot; row_offset / row_scale are the kernels').
QOutputStage output_stage(const QConvState& s) {
  QOutputStage stage;
  stage.column_offset = s.column_offset.data();
  if (s.dynamic)
    stage.weight_zero_point = s.weight_row_sums.data();
  else if (s.has_weight_zero_point)
    stage.weight_zero_point = s.weight_zero_point.data();
  if (s.f32_output) {
    stage.column_scale = s.column_scale.data();
    stage.bias = s.bias_f32.empty() ? nullptr : s.bias_f32.data();
    stage.relu = s.relu;
  } else {
    stage.multiplier = s.multiplier.data();
    stage.output_zero_point = s.output_zero_point;
    stage.clamp_min = s.clamp_min;
    stage.clamp_max = s.clamp_max;
  }
  return stage;
}

// The integer convolution of s8 codes x by the implementation chosen when prepared (see the file
// comment) into y, whose dtype and shape are set.
void integer_conv(const ConvGeometry& g, const QConvState& s, const int8_t* x, const kernels::QConvInputGrid& grid,
                  Tensor& y, Workspace& workspace) {
  kernels::QConvWeights w;
  w.codes = s.codes.data();
  w.weight_zero_point = s.weight_zero_point.data();
  w.bias = s.bias.empty() ? nullptr : s.bias.data();
  w.group_weights = s.group_weights.data();
  w.direct_pairs = s.direct_weights.empty() ? nullptr : s.direct_weights.data();
  const QOutputStage stage = output_stage(s);
  const int index = s.implementation.index;
  if (index == kReference) {
    if (s.f32_output)
      kernels::qconv2d_s8_f32_ref(g, w, x, grid, stage, y.data<float>());
    else
      kernels::qconv2d_s8_ref(g, w, x, grid, stage, y.data<int8_t>());
  } else if (index == kIm2row) {
    if (s.f32_output)
      kernels::qconv2d_s8_f32_im2row(g, w, x, grid, stage, y.data<float>(), workspace);
    else
      kernels::qconv2d_s8_im2row(g, w, x, grid, stage, y.data<int8_t>(), workspace);
  } else {
    const Isa isa = index == kDirectVnni ? Isa::Avx512Vnni : Isa::Avx2;
    const char* why = s.f32_output ? kernels::qconv2d_s8_f32_direct(isa, g, w, x, grid, stage, y.data<float>(), workspace)
                                   : kernels::qconv2d_s8_direct(isa, g, w, x, grid, stage, y.data<int8_t>(), workspace);
    if (why) throw Error(ErrorKind::Internal, std::string("QConv2D: ") + why);
  }
}

// The weight codes of a QConv2D / DynamicQConv2D node, checked and unpacked; chooses the
// implementation and prepares the weights in the layout it reads (only that one); returns each
// output channel's code sum.
std::vector<int32_t> prepare_weights(const Node& node, const Tensor& codes, QConvState& s) {
  const int64_t oc = codes.dim(0);
  const std::vector<int64_t>& ks = node.attr("kernel_shape").as_ints();  // checked by qconv_geometry
  const int64_t kh = ks[0], kw = ks[1], groups = node.attr_int("group", 1);
  const int64_t cg = node.attr_int("in_channels", -1) / groups;
  s.k = cg * kh * kw;
  check_weight_tensor(node, codes, s.k);
  const DType d = codes.dtype();
  s.codes = unpack_codes(codes, {oc, s.k});
  QConvProblem problem{s.k, 1};
  const std::vector<int64_t> strides = node.attr_ints("strides", {1, 1});
  if (strides.size() == 2) problem.stride_w = strides[1];
  s.implementation = kernels::choose(kImplementations, problem);
  std::vector<int32_t> row_sums = kernels::qconv_weight_sums(s.codes.data(), oc, s.k);
  if (s.implementation.index == kDirectVnni || s.implementation.index == kDirectAvx2)
    s.direct_weights = kernels::direct_conv_weight_pairs(s.codes.data(), oc, s.k);
  if (s.implementation.index == kIm2row)  // per group, rows permuted to (ki, kj, c) order
    s.group_weights = kernels::qconv_im2row_weights(s.codes.data(), oc, groups, s.k, kh * kw, d);
  return row_sums;
}

// The output channels of QConv2D / DynamicQConv2D from the weight codes [OC, packed K]; in[2], ...
// (named by `vectors`) must be per-channel vectors [OC].
int64_t out_channels(const Node& node, std::span<const Shape> in, std::initializer_list<const char*> vectors) {
  if (in[1].size() != 2) shape_error(node, "weight codes must be [out_channels, packed K], got " + to_string(in[1]));
  const int64_t oc = in[1][0];
  auto name = vectors.begin();
  for (size_t i = 2; i < in.size() && name != vectors.end(); ++i, ++name)
    if (in[i].size() != 1 || in[i][0] != oc)
      shape_error(node, std::string(*name) + " must be [" + std::to_string(oc) + "], got " + to_string(in[i]));
  return oc;
}

// Op::describe of both integer convolutions: the implementation chosen when prepared (and, for
// im2row, the GEMM under it). Built only when asked (LOWBIT_VERBOSE), not on every prepare.
std::string describe_prepared(const OpState* state) {
  if (!state) return "prepared on every call (weights are not constants)";
  const auto& s = state_as<QConvState>(state);
  std::string line = s.implementation.describe();
  if (s.implementation.index == kIm2row) {
    const QWeights& w = s.group_weights.front();
    line += " on " + kernels::describe_qgemm(w.storage(), w.vnni_layout().defined(), w.kernel_layout().defined());
  }
  return line;
}

class QConv2D final : public PreparedInferenceOp {
 public:
  QConv2D() { traits_ = {.version = 2, .onnx = "QLinearConv", .float_op = "Conv2D"}; }
  void upgrade(Node& node, int from_version, Graph& graph) const override {
    if (from_version != 1) return Op::upgrade(node, from_version, graph);
    upgrade_integer_layer(node, graph);
  }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, IntegerLayerInputs::min_count, IntegerLayerInputs::max_count);
    const int64_t oc = out_channels(node, in, {"weight_scale", "weight_zero_point"});
    integer_layer_inputs(node, in, oc);
    relu_of(node);
    const ConvGeometry g = qconv_geometry(node, in[0], oc);
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {integer_layer_dtype(node, in)};
  }

  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QConvState>();
    const int64_t oc = c[1]->dim(0);
    const std::vector<int32_t> row_sums = prepare_weights(node, *c[1], *s);
    const IntegerLayerInputs l = IntegerLayerInputs::of(c.size());
    if (l.has_bias()) s->bias.assign(c[l.bias]->data<int32_t>(), c[l.bias]->data<int32_t>() + oc);
    prepare_output_stage(node, row_sums, c, s->k, *s);
    return s;
  }

  std::string describe(const Node&, const OpState* state) const override {
    return describe_prepared(state);
  }

  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace& workspace) const override {
    if (!state) return forward(node, in, out);
    const auto& s = state_as<QConvState>(state);
    const ConvGeometry g = qconv_geometry(node, in[0]->shape(), static_cast<int64_t>(s.column_offset.size()));
    const Shape shape{g.batch, g.out_channels, g.out_h, g.out_w};
    prepare_output(*out[0], s.f32_output ? DType::F32 : DType::S8, shape);
    kernels::QConvInputGrid grid;
    grid.zero_point = s.input_zero_point;
    integer_conv(g, s, in[0]->data<int8_t>(), grid, *out[0], workspace);
  }
};

// DynamicQConv2D: x f32 [N, C, H, W] quantized at run time (8-bit affine, one range per image or
// per batch: attribute granularity "row" or "tensor", as DynamicQDense's), symmetric weight codes
// [OC, .] with weight_scale f32 [OC], optional bias f32 [OC]; f32 output
//   y = ((float(acc) * x_scale) * weight_scale[oc]) + bias[oc], then ReLU if activation is "relu",
// acc = sum (x_q - x_zero_point) * w exactly (DynamicQDense's arithmetic with K = C/group*kh*kw).
class DynamicQConv2D final : public PreparedInferenceOp {
 public:
  DynamicQConv2D() { traits_ = {.onnx = "ConvInteger", .float_op = "Conv2D", .dynamic = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 4);
    const int64_t oc = out_channels(node, in, {"weight_scale", "bias"});
    relu_of(node);
    per_row_ranges(node);
    const ConvGeometry g = qconv_geometry(node, in[0], oc);
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {dynamic_layer_dtype(node, in)};
  }
  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QConvState>();
    const int64_t oc = c[1]->dim(0);
    s->weight_row_sums = prepare_weights(node, *c[1], *s);
    s->dynamic = true;
    s->per_image = per_row_ranges(node);  // a row is an image
    s->f32_output = true;
    s->relu = relu_of(node);
    s->column_offset.assign(static_cast<size_t>(oc), 0);
    s->weight_zero_point.assign(static_cast<size_t>(oc), 0);
    s->column_scale.assign(c[2]->data<float>(), c[2]->data<float>() + oc);
    for (int64_t m = 0; m < oc; ++m)
      if (!(s->column_scale[m] > 0.0f) || !std::isfinite(s->column_scale[m]))
        shape_error(node, "weight_scale[" + std::to_string(m) + "] must be positive and finite");
    if (c.size() == 4) s->bias_f32.assign(c[3]->data<float>(), c[3]->data<float>() + oc);
    return s;
  }

  std::string describe(const Node&, const OpState* state) const override {
    return describe_prepared(state);
  }

  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace& workspace) const override {
    if (!state) return forward(node, in, out);
    const auto& s = state_as<QConvState>(state);
    const ConvGeometry g = qconv_geometry(node, in[0]->shape(), static_cast<int64_t>(s.column_offset.size()));
    prepare_output(*out[0], DType::F32, {g.batch, g.out_channels, g.out_h, g.out_w});
    // Quantize the input: affine s8 per image (or per batch) from its observed range.
    const int64_t image = g.in_channels * g.in_spatial();
    int8_t* codes = workspace.take<int8_t>(static_cast<size_t>(g.batch * image));
    int32_t* zero = workspace.take<int32_t>(static_cast<size_t>(g.batch));
    float* scale = workspace.take<float>(static_cast<size_t>(g.batch));
    kernels::quantize_images_s8(in[0]->data<float>(), g.batch, image, s.per_image, codes, zero, scale);
    kernels::QConvInputGrid grid;
    grid.image_zero_point = zero;
    grid.image_scale = scale;
    integer_conv(g, s, codes, grid, *out[0], workspace);
  }
};

}  // namespace

void register_qconv(const Registrar& add) {
  add("QConv2D", std::make_unique<QConv2D>());
  add("DynamicQConv2D", std::make_unique<DynamicQConv2D>());
}

}  // namespace lowbit::ops
