// ONNX out: a lowbit Graph as an ONNX ModelProto, in one of three profiles (docs/onnx.md):
//   float      every layer in float (an integer model is dequantized first);
//   qdq        integer layers as QuantizeLinear / DequantizeLinear around float ops (the form ONNX
//              Runtime's quantizer writes and TensorRT reads), weights as int8 (or int4 at opset 21);
//   qoperator  integer layers as integer ops: QLinearConv, ConvInteger, MatMulInteger (int32
//              accumulation, bias added in int32, then one float rescale);
// with `symmetric`, every activation zero point is 0 (the grid re-fitted to the same range).
// Dynamic layers become DynamicQuantizeLinear + MatMulInteger / ConvInteger in both.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/file_util.h"
#include "graph/ops/integer_inputs.h"
#include "kernels/blockq.h"
#include "lowbit/error.h"
#include "lowbit/ops.h"
#include "lowbit/quant_params.h"
#include "lowbit/quantize.h"
#include "lowbit/onnx.h"
#include "onnx/tensor_proto.h"

namespace lowbit {
namespace onnx_io {
namespace {

using L = ops::IntegerLayerInputs;
using TP = onnx::TensorProto;

int ir_version_for(int opset) { return opset <= 14 ? 7 : opset <= 18 ? 8 : opset <= 20 ? 9 : 10; }

class Exporter {
 public:
  Exporter(const Graph& g, const OnnxExportOptions& o) : g_(g), opt_(o), shapes_(g.infer_shapes()) {}

  OnnxExport run() {
    opset_ = opt_.opset ? opt_.opset : 13;
    if (opset_ < 13 || opset_ > kOnnxMaxOpset)
      throw Error(ErrorKind::InvalidArgument, "ONNX export: opset " + std::to_string(opset_) + " is not supported (13 to " +
                                                  std::to_string(kOnnxMaxOpset) + ")");
    gp_ = model_.mutable_graph();
    gp_->set_name(g_.name.empty() ? "lowbit" : g_.name);
    for (const auto& [name, t] : g_.initializers) names_.insert(name);
    for (const auto& n : g_.nodes)
      for (const auto& o : n.outputs) names_.insert(o);
    for (const auto& in : g_.inputs) {
      names_.insert(in.name);
      value_info(gp_->add_input(), in.name, in.dtype, in.shape, in.symbols);
    }
    for (const auto& n : g_.nodes) node(n);
    for (const auto& out : g_.outputs) {
      const ValueInfo& vi = shapes_.at(out);
      std::vector<std::string> symbols;
      if (!vi.shape.empty() && vi.shape[0] < 0 && !g_.inputs.empty() && !g_.inputs[0].symbols.empty())
        symbols.assign(vi.shape.size(), ""), symbols[0] = g_.inputs[0].symbols[0];
      value_info(gp_->add_output(), out, vi.dtype, vi.shape, symbols);
    }
    for (const auto& name : used_initializers_) tensor_to_proto(g_.initializers.at(name), name, *gp_->add_initializer());
    model_.set_ir_version(ir_version_for(opset_));
    model_.set_producer_name("lowbit");
    model_.set_producer_version("0.1.0");
    auto* op = model_.add_opset_import();
    op->set_domain("");
    op->set_version(opset_);
    for (const auto& [k, v] : g_.metadata) {
      auto* p = model_.add_metadata_props();
      p->set_key("lowbit." + k);
      p->set_value(v);
    }
    OnnxExport result;
    if (!model_.SerializeToString(&result.bytes)) throw Error(ErrorKind::Internal, "ONNX export: the ModelProto does not serialize");
    result.notes.assign(notes_.begin(), notes_.end());
    result.opset = opset_;
    return result;
  }

 private:
  // ---- building blocks ----
  void value_info(onnx::ValueInfoProto* v, const std::string& name, DType dtype, const Shape& shape,
                  const std::vector<std::string>& symbols) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx_type_of(dtype));
    auto* s = tt->mutable_shape();
    for (size_t d = 0; d < shape.size(); ++d) {
      auto* dim = s->add_dim();
      if (shape[d] >= 0) dim->set_dim_value(shape[d]);
      else dim->set_dim_param(d < symbols.size() && !symbols[d].empty() ? symbols[d] : d == 0 ? "batch" : name + "_" + std::to_string(d));
    }
  }
  std::string fresh(const std::string& hint) { return unique_name(names_, hint); }
  std::string init(const Tensor& t, const std::string& hint) {
    const std::string name = fresh(hint);
    tensor_to_proto(t, name, *gp_->add_initializer());
    return name;
  }
  std::string int4_init(const std::vector<int32_t>& codes, const Shape& shape, bool is_signed, const std::string& hint) {
    const std::string name = fresh(hint);
    auto* p = gp_->add_initializer();
    p->set_name(name);
    p->set_data_type(is_signed ? 22 : 21);  // INT4 / UINT4 (opset 21)
    for (int64_t d : shape) p->add_dims(d);
    std::string bytes((codes.size() + 1) / 2, '\0');
    for (size_t i = 0; i < codes.size(); ++i) bytes[i / 2] |= static_cast<char>((codes[i] & 0xF) << (i % 2 ? 4 : 0));  // low nibble first
    p->set_raw_data(bytes);
    return name;
  }
  std::string scalar(float v, const std::string& hint) { return init(Tensor::from_vector({}, std::vector<float>{v}), hint); }
  // A lowbit initializer, exported as it is (once).
  std::string use(const std::string& name) {
    if (g_.initializers.count(name)) used_initializers_.insert(name);
    return name;
  }
  const Tensor& tensor(const std::string& name) const {
    auto it = g_.initializers.find(name);
    if (it == g_.initializers.end())
      throw Error(ErrorKind::Unsupported, "ONNX export: '" + name + "' must be an initializer (a constant) for this export");
    return it->second;
  }
  onnx::NodeProto* add(const std::string& op, std::vector<std::string> in, std::vector<std::string> out, const std::string& name,
                       const std::string& domain = "") {
    auto* n = gp_->add_node();
    n->set_op_type(op);
    n->set_name(fresh_node(name));
    if (!domain.empty()) n->set_domain(domain);
    for (auto& i : in) n->add_input(i);
    for (auto& o : out) n->add_output(o);
    return n;
  }
  std::string fresh_node(const std::string& hint) { return unique_name(node_names_, hint); }
  static void set(onnx::NodeProto* n, const std::string& key, int64_t v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void set(onnx::NodeProto* n, const std::string& key, float v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void set(onnx::NodeProto* n, const std::string& key, const std::vector<int64_t>& v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }
  static void set(onnx::NodeProto* n, const std::string& key, const std::string& v) {
    auto* a = n->add_attribute();
    a->set_name(key);
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s(v);
  }
  std::string ints_init(const std::vector<int64_t>& v, const std::string& hint) {
    Tensor t(DType::S64, {static_cast<int64_t>(v.size())});
    std::copy(v.begin(), v.end(), t.data<int64_t>());
    return init(t, hint);
  }
  void require_opset(int needed, const std::string& what) {
    if (opset_ < needed)
      throw Error(ErrorKind::InvalidArgument, "ONNX export: " + what + " needs opset " + std::to_string(needed) + " (export with --opset " +
                                                  std::to_string(needed) + ")");
  }

  // ---- activation grids ----
  // The (scale, zero point) initializers of an s8 activation grid as exported: lowbit's own, or
  // with `symmetric` a grid with zero point 0 that covers the same range.
  std::pair<std::string, std::string> grid(const std::string& scale, const std::string& zero_point) {
    if (!opt_.symmetric) return {use(scale), use(zero_point)};
    auto it = symmetric_.find(scale + "|" + zero_point);
    if (it != symmetric_.end()) return it->second;
    const float s = tensor(scale).data<float>()[0];
    const Tensor& zt = tensor(zero_point);
    const int32_t z = zt.dtype() == DType::S8 ? zt.data<int8_t>()[0] : zt.data<uint8_t>()[0];
    if (zt.dtype() != DType::S8 && zt.dtype() != DType::U8)
      throw Error(ErrorKind::Unsupported, "ONNX export: zero point '" + zero_point + "' must be s8 or u8");
    if (zt.dtype() == DType::S8 && z == 0) return {use(scale), use(zero_point)};  // symmetric already
    notes_.insert("activation grids with a zero point are re-fitted to zero point 0 over the same range (one bit less "
                  "resolution for values of one sign), so results differ slightly from lowbit's");
    const float lo = s * static_cast<float>((zt.dtype() == DType::S8 ? -128 : 0) - z);
    const float hi = s * static_cast<float>((zt.dtype() == DType::S8 ? 127 : 255) - z);
    const float sym = std::max(std::fabs(lo), std::fabs(hi)) / 127.0f;
    Tensor z0(DType::S8, {});
    auto names = std::make_pair(init(Tensor::from_vector({}, std::vector<float>{sym > 0 ? sym : 1.0f}), scale + "_sym"), init(z0, zero_point + "_sym"));
    symmetric_[scale + "|" + zero_point] = names;
    exported_scales_[names.first] = sym > 0 ? sym : 1.0f;
    return names;
  }
  // The value of an exported scale (lowbit's, or a symmetric one made here).
  float scale_value(const std::string& name) const {
    auto it = exported_scales_.find(name);
    return it != exported_scales_.end() ? it->second : tensor(name).data<float>()[0];
  }
  int32_t zero_point_value(const std::string& name) const {
    if (opt_.symmetric && !g_.initializers.count(name)) return 0;
    return tensor(name).data<int8_t>()[0];
  }
  // The float value of an s8 activation (one DequantizeLinear per value, shared by its readers).
  std::string dequantized(const std::string& value, const std::string& scale, const std::string& zero_point) {
    auto it = dequantized_.find(value);
    if (it != dequantized_.end()) return it->second;
    auto [s, z] = grid(scale, zero_point);
    const std::string out = fresh(value + "_dq");
    add("DequantizeLinear", {value, s, z}, {out}, value + "_dequantize");
    dequantized_[value] = out;
    return out;
  }

  // ---- weights of integer layers ----
  struct Weights {
    std::vector<int32_t> codes;  // [rows, k] row-major
    int64_t rows = 0, k = 0;
    std::vector<float> scale;    // [rows]
    std::vector<int32_t> zero_point;
    bool low_bit = false, is_signed = true;
  };
  Weights weights(const Node& n, int64_t k) {
    Weights w;
    const Tensor& codes = tensor(n.inputs[L::codes]);
    w.rows = codes.shape()[0];
    w.k = k;
    w.codes = unpack_codes(codes, {w.rows, k});
    const Tensor& s = tensor(n.inputs[L::weight_scale]);
    w.scale.assign(s.data<float>(), s.data<float>() + s.numel());
    if (n.inputs.size() > L::weight_zero_point && traits_of(n).dynamic == false) {
      const Tensor& z = tensor(n.inputs[L::weight_zero_point]);
      w.zero_point.assign(z.data<int32_t>(), z.data<int32_t>() + z.numel());
    } else {
      w.zero_point.assign(w.rows, 0);
    }
    w.low_bit = codes.dtype() != DType::S8;
    w.is_signed = codes.dtype() == DType::S8 || codes.dtype() == DType::S4 || codes.dtype() == DType::S2;
    if (w.low_bit && opset_ < 21) notes_.insert(std::string("packed ") + name_of(codes.dtype()) + " weights are exported as int8 codes (int4 needs --opset 21)");
    for (int32_t c : w.codes)
      if (c < -128 || c > 127) throw Error(ErrorKind::Unsupported, "ONNX export: layer '" + n.name + "' has weight codes outside int8");
    for (int32_t z : w.zero_point)
      if (z < -128 || z > 127) throw Error(ErrorKind::Unsupported, "ONNX export: layer '" + n.name + "' has weight zero points outside int8");
    return w;
  }
  bool zero_points_zero(const Weights& w) const {
    return std::all_of(w.zero_point.begin(), w.zero_point.end(), [](int32_t z) { return z == 0; });
  }
  // The codes as an initializer of `shape` ([rows, k] reshaped, or transposed to [k, rows]).
  std::string codes_init(const Weights& w, Shape shape, bool transpose, const std::string& hint) {
    std::vector<int32_t> c = w.codes;
    if (transpose)
      for (int64_t r = 0; r < w.rows; ++r)
        for (int64_t j = 0; j < w.k; ++j) c[j * w.rows + r] = w.codes[r * w.k + j];
    if (w.low_bit && opset_ >= 21 && !transpose) return int4_init(c, shape, true, hint);
    Tensor t(DType::S8, shape);
    for (size_t i = 0; i < c.size(); ++i) t.data<int8_t>()[i] = static_cast<int8_t>(c[i]);
    return init(t, hint);
  }
  std::string zero_point_init(const Weights& w, Shape shape, const std::string& hint, bool int4) {
    if (int4) return int4_init(w.zero_point, shape, true, hint);
    Tensor t(DType::S8, shape);
    for (int64_t i = 0; i < w.rows; ++i) t.data<int8_t>()[i] = static_cast<int8_t>(w.zero_point[i]);
    return init(t, hint);
  }
  std::string f32_init(const std::vector<float>& v, Shape shape, const std::string& hint) {
    return init(Tensor::from_vector(std::move(shape), v), hint);
  }
  // The layer's bias as int32 codes at scale x_scale * w_scale (re-rounded when the exported x
  // grid differs from lowbit's, i.e. with `symmetric`).
  std::vector<int32_t> bias_codes(const Node& n, const L& l, const Weights& w, float x_scale_old, float x_scale_new) {
    std::vector<int32_t> b(w.rows, 0);
    if (!l.has_bias()) return b;
    const Tensor& t = tensor(n.inputs[l.bias]);
    for (int64_t i = 0; i < w.rows; ++i) {
      const int32_t q = t.data<int32_t>()[i];
      if (x_scale_old == x_scale_new) b[i] = q;
      else b[i] = static_cast<int32_t>(std::nearbyint(static_cast<double>(q) * (x_scale_old * w.scale[i]) / (x_scale_new * w.scale[i])));
    }
    return b;
  }
  std::string s32_init(const std::vector<int32_t>& v, Shape shape, const std::string& hint) {
    Tensor t(DType::S32, std::move(shape));
    std::copy(v.begin(), v.end(), t.data<int32_t>());
    return init(t, hint);
  }

  // ---- nodes ----
  void node(const Node& n) {
    const OpTraits& t = traits_of(n);
    if (t.is_integer_layer()) {
      if (opt_.profile == OnnxProfile::Float)
        throw Error(ErrorKind::Internal, "ONNX export: integer layer in a float export");
      if (n.op == "QDense" || n.op == "QConv2D") return integer_layer(n);
      if (n.op == "DynamicQDense" || n.op == "DynamicQConv2D") return dynamic_layer(n);
      if (n.op == "BlockQDense") return block_layer(n);
      if (n.op == "QAttention") return q_attention(n);
      throw Error(ErrorKind::Unsupported, "ONNX export: integer op " + n.op + " (node '" + n.name + "') has no ONNX form yet");
    }
    if (n.op == "Requantize") {
      // [x u8|s8, x_scale, y_scale, y_zero_point, x_zero_point?]: DequantizeLinear, then QuantizeLinear.
      const std::string f = fresh(n.outputs[0] + "_f");
      std::vector<std::string> dq = {n.inputs[0], use(n.inputs[1])};
      if (n.inputs.size() > 4) dq.push_back(use(n.inputs[4]));
      add("DequantizeLinear", dq, {f}, n.name + "_dequantize");
      auto [s, z] = grid(n.inputs[2], n.inputs[3]);
      add("QuantizeLinear", {f, s, z}, {n.outputs[0]}, n.name);
      return;
    }
    if (n.op == "QuantizeLinear" || n.op == "DequantizeLinear") {
      std::vector<std::string> in = {n.inputs[0]};
      const bool scalar_grid = n.inputs.size() > 2 && g_.initializers.count(n.inputs[1]) && tensor(n.inputs[1]).numel() == 1 &&
                               tensor(n.inputs[2]).dtype() != DType::U8;
      if (scalar_grid) {  // an activation grid: the profile's (grid() is lowbit's own unless symmetric)
        auto [s, z] = grid(n.inputs[1], n.inputs[2]);
        in.push_back(s), in.push_back(z);
      } else {
        for (size_t i = 1; i < n.inputs.size(); ++i) in.push_back(use(n.inputs[i]));
      }
      auto* p = add(n.op, in, {n.outputs[0]}, n.name);
      if (n.attributes.count("axis")) set(p, "axis", n.attr_int("axis", 1));
      if (n.attr_int("block_size", 0)) {
        require_opset(21, "block quantization");
        set(p, "block_size", n.attr_int("block_size", 0));
      }
      return;
    }
    float_node(n);
  }

  // Attention in its unfused spelling, as PyTorch exports it: heads split by Reshape + Transpose,
  // softmax of the scaled (and masked) scores, heads merged back. With `quantized_probabilities`
  // (QAttention) the probabilities pass a QuantizeLinear / DequantizeLinear pair on QAttention's
  // grid (1/255, zero point -128; symmetric profile: 1/127, zero point 0).
  void attention(const Node& n, const std::vector<std::string>& in, const std::string& out, bool quantized_probabilities) {
    const int64_t h = n.attr_int("num_heads", 1);
    const Shape& q = shapes_.at(n.inputs[0]).shape;
    const float scale = static_cast<float>(n.attr_float("scale", 1.0 / std::sqrt(static_cast<double>(q.back() / h))));
    auto heads = [&](const std::string& x, std::vector<int64_t> perm, const char* tag) {
      const std::string r = fresh(out + "_" + tag + "_heads"), t = fresh(out + "_" + tag + "_t");
      add("Reshape", {x, ints_init({0, 0, h, -1}, r + "_shape")}, {r}, n.name + "_" + tag + "_reshape");
      set(add("Transpose", {r}, {t}, n.name + "_" + tag + "_transpose"), "perm", std::move(perm));
      return t;
    };
    const std::string qh = heads(in[0], {0, 2, 1, 3}, "q"), kt = heads(in[1], {0, 2, 3, 1}, "k"), vh = heads(in[2], {0, 2, 1, 3}, "v");
    std::string s = fresh(out + "_scores");
    add("MatMul", {qh, kt}, {s}, n.name + "_scores");
    const std::string scaled = fresh(out + "_scaled");
    add("Mul", {s, scalar(scale, out + "_scale")}, {scaled}, n.name + "_scale");
    s = scaled;
    if (in.size() > 3) {
      const std::string masked = fresh(out + "_masked");
      add("Add", {s, in[3]}, {masked}, n.name + "_mask");
      s = masked;
    }
    std::string p = fresh(out + "_probabilities");
    const std::string o = fresh(out + "_heads_out"), ot = fresh(out + "_heads_t");
    set(add("Softmax", {s}, {p}, n.name + "_softmax"), "axis", int64_t{-1});
    if (quantized_probabilities) {
      if (opt_.symmetric) notes_.insert("attention probabilities are on the grid 1/127 (zero point 0) instead of lowbit's 1/255 (zero point -128)");
      Tensor zero(DType::S8, {});
      zero.data<int8_t>()[0] = static_cast<int8_t>(opt_.symmetric ? 0 : -128);
      const std::string ps = scalar(opt_.symmetric ? 1.0f / 127.0f : 1.0f / 255.0f, out + "_probabilities_scale"),
                        pz = init(zero, out + "_probabilities_zero_point"), pq = fresh(p + "_q"), pf = fresh(p + "_dq");
      add("QuantizeLinear", {p, ps, pz}, {pq}, n.name + "_probabilities_quantize");
      add("DequantizeLinear", {pq, ps, pz}, {pf}, n.name + "_probabilities_dequantize");
      p = pf;
    }
    add("MatMul", {p, vh}, {o}, n.name + "_values");
    set(add("Transpose", {o}, {ot}, n.name + "_merge_transpose"), "perm", std::vector<int64_t>{0, 2, 1, 3});
    add("Reshape", {ot, ints_init({0, 0, -1}, out + "_merge_shape")}, {out}, n.name);
  }

  // QAttention in every quantized profile: q, k and v dequantized, the attention spelled out with
  // its probabilities on their grid, the output quantized when it is s8 (ONNX has no integer
  // attention op; runtimes fuse the QDQ pairs around the two MatMuls into integer products).
  // (QAttention reads k and v codes of -128 as -127: not spelled out, one step at the very bottom.)
  void q_attention(const Node& n) {
    using A = ops::AttentionInputs;
    const A l = A::of(n.inputs.size());
    std::vector<std::string> in;
    for (size_t i = 0; i < 3; ++i) in.push_back(dequantized(n.inputs[i], n.inputs[A::q_scale + 2 * i], n.inputs[A::q_zero_point + 2 * i]));
    if (l.has_mask()) in.push_back(use(n.inputs[l.mask]));
    const std::string& out = n.outputs[0];
    const std::string yf = l.s8_output() ? fresh(out + "_f") : out;
    attention(n, in, yf, true);
    if (l.s8_output()) {
      auto [ys, yz] = grid(n.inputs[l.y_scale], n.inputs[l.y_zero_point]);
      add("QuantizeLinear", {yf, ys, yz}, {out}, n.name + "_quantize");
    }
  }

  // A float op. Inputs that are initializers are exported as they are.
  void float_node(const Node& n) {
    std::vector<std::string> in;
    for (const auto& i : n.inputs) in.push_back(use(i));
    const std::string& out = n.outputs[0];
    const bool relu = n.attr_string("activation", "none") == "relu";
    const std::string y = relu ? fresh(out + "_linear") : out;
    if (n.op == "Dense") {
      const Shape& x = shapes_.at(n.inputs[0]).shape;
      if (x.size() == 2) {
        auto* p = add("Gemm", in, {y}, n.name);
        set(p, "transB", int64_t{1});
      } else {
        const std::string wt = fresh(n.inputs[1] + "_t");
        auto* t = add("Transpose", {in[1]}, {wt}, n.name + "_transpose");
        set(t, "perm", std::vector<int64_t>{1, 0});
        const std::string m = in.size() > 2 ? fresh(out + "_matmul") : y;
        add("MatMul", {in[0], wt}, {m}, n.name);
        if (in.size() > 2) add("Add", {m, in[2]}, {y}, n.name + "_bias");
      }
    } else if (n.op == "Conv2D") {
      auto* p = add("Conv", in, {y}, n.name);
      conv_attributes(p, n);
    } else if (n.op == "MaxPool2D" || n.op == "AveragePool2D") {
      auto* p = add(n.op == "MaxPool2D" ? "MaxPool" : "AveragePool", in, {out}, n.name);
      set(p, "kernel_shape", n.attr_ints("kernel_shape", {}));
      set(p, "strides", n.attr_ints("strides", {1, 1}));
      set(p, "pads", n.attr_ints("pads", {0, 0, 0, 0}));
      if (n.op == "AveragePool2D") set(p, "count_include_pad", n.attr_int("count_include_pad", 0));
    } else if (n.op == "Reshape") {
      std::vector<int64_t> dims;
      if (n.attributes.count("dims")) {
        dims = n.attr_ints("dims", {});
      } else {
        dims = n.attr_ints("shape", {});
        dims.insert(dims.begin(), 0);  // keep the batch
      }
      auto* p = add("Reshape", {in[0], ints_init(dims, out + "_shape")}, {out}, n.name);
      if (n.attr_int("allowzero", 0)) set(p, "allowzero", int64_t{1});
    } else if (n.op == "Clip") {
      std::vector<std::string> ins = {in[0], n.attributes.count("min") ? scalar(static_cast<float>(n.attr_float("min", 0)), out + "_min") : ""};
      if (n.attributes.count("max")) ins.push_back(scalar(static_cast<float>(n.attr_float("max", 0)), out + "_max"));
      add("Clip", ins, {out}, n.name);
    } else if (n.op == "Squeeze" || n.op == "Unsqueeze") {
      std::vector<std::string> ins = {in[0]};
      if (n.attributes.count("axes")) ins.push_back(ints_init(n.attr_ints("axes", {}), out + "_axes"));
      add(n.op, ins, {out}, n.name);
    } else if (n.op == "Slice") {
      std::vector<std::string> ins = {in[0], ints_init(n.attr_ints("starts", {}), out + "_starts"), ints_init(n.attr_ints("ends", {}), out + "_ends")};
      if (n.attributes.count("axes") || n.attributes.count("steps")) {
        std::vector<int64_t> axes = n.attr_ints("axes", {});
        if (axes.empty())
          for (size_t i = 0; i < n.attr_ints("starts", {}).size(); ++i) axes.push_back(static_cast<int64_t>(i));
        ins.push_back(ints_init(axes, out + "_axes"));
      }
      if (n.attributes.count("steps")) ins.push_back(ints_init(n.attr_ints("steps", {}), out + "_steps"));
      add("Slice", ins, {out}, n.name);
    } else if (n.op == "Cast") {
      auto* p = add("Cast", in, {out}, n.name);
      set(p, "to", static_cast<int64_t>(onnx_type_of(dtype_from_name(n.attr_string("to", "f32")))));
    } else if (n.op == "Constant") {
      auto* p = add("Constant", {}, {out}, n.name);
      for (const auto& [k, a] : n.attributes) {
        auto* pa = p->add_attribute();
        pa->set_name(k);
        if (a.kind() == Attribute::Kind::Float || (k == "value_float" && a.is_int())) {
          pa->set_type(onnx::AttributeProto::FLOAT);
          pa->set_f(static_cast<float>(a.as_float()));
        } else if (a.kind() == Attribute::Kind::Int) {
          pa->set_type(onnx::AttributeProto::INT);
          pa->set_i(a.as_int());
        } else if (a.kind() == Attribute::Kind::Ints && k == "value_ints") {
          pa->set_type(onnx::AttributeProto::INTS);
          for (int64_t v : a.as_ints()) pa->add_ints(v);
        } else {
          pa->set_type(onnx::AttributeProto::FLOATS);
          for (double v : a.as_floats()) pa->add_floats(static_cast<float>(v));
        }
      }
    } else if (n.op == "Dropout") {
      add("Identity", {in[0]}, {out}, n.name);  // inference
      if (n.outputs.size() > 1) throw Error(ErrorKind::Unsupported, "ONNX export: Dropout's mask output has no inference form");
    } else if (n.op == "Expand") {
      add("Expand", {in[0], ints_init(n.attr_ints("shape", {}), out + "_shape")}, {out}, n.name);
    } else if (n.op == "LayerNormalization") {
      require_opset(17, "LayerNormalization");
      if (n.outputs.size() > 1) throw Error(ErrorKind::Unsupported, "ONNX export: LayerNormalization's statistics outputs are not exported");
      auto* p = add("LayerNormalization", in, {out}, n.name);
      set(p, "axis", n.attr_int("axis", -1));
      set(p, "epsilon", static_cast<float>(n.attr_float("epsilon", 1e-5f)));
    } else if (n.op == "Attention") {
      attention(n, in, out, false);
    } else if (n.op == "Gelu") {
      require_opset(20, "Gelu");
      auto* p = add("Gelu", in, {out}, n.name);
      set(p, "approximate", n.attr_string("approximate", "none"));
    } else if (n.op == "ReduceSum" || n.op == "ReduceMean" || n.op == "ReduceMax" || n.op == "ReduceMin") {
      const bool axes_input = n.op == "ReduceSum" || opset_ >= 18;
      std::vector<std::string> ins = {in[0]};
      if (axes_input && n.attributes.count("axes")) ins.push_back(ints_init(n.attr_ints("axes", {}), out + "_axes"));
      auto* p = add(n.op, ins, {out}, n.name);
      if (!axes_input && n.attributes.count("axes")) set(p, "axes", n.attr_ints("axes", {}));
      if (n.attributes.count("keepdims")) set(p, "keepdims", n.attr_int("keepdims", 1));
      if (n.attributes.count("noop_with_empty_axes")) set(p, "noop_with_empty_axes", n.attr_int("noop_with_empty_axes", 0));
    } else if (n.op == "DynamicQuantizeLinear") {
      add(n.op, in, n.outputs, n.name);  // its three outputs: codes, scale, zero point
    } else {
      const OpTraits& t = traits_of(n);
      static const std::set<std::string> plain = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Softmax", "LogSoftmax", "Add", "Sub", "Mul",
                                                  "Div", "MatMul", "Flatten", "Transpose", "Concat", "Shape", "Gather",
                                                  "GlobalAveragePool", "BatchNormalization", "Identity", "MatMulInteger", "ConvInteger",
                                                  "Sqrt", "Reciprocal", "Neg", "Erf", "Exp", "Log", "Abs", "Pow", "Equal", "Where"};
      if (!plain.count(n.op) || t.onnx != n.op)
        throw Error(ErrorKind::Unsupported, "ONNX export: op " + n.op + " (node '" + n.name + "') has no ONNX form yet");
      auto* p = add(n.op, in, {n.outputs[0]}, n.name);
      for (const auto& [k, a] : n.attributes) {
        if (a.is_int()) set(p, k, a.as_int());
        else if (a.is_number()) set(p, k, static_cast<float>(a.as_float()));
        else if (a.is_ints()) set(p, k, a.as_ints());
        else if (a.is_string()) set(p, k, a.as_string());
        else throw Error(ErrorKind::Unsupported, "ONNX export: attribute '" + k + "' of node '" + n.name + "'");
      }
    }
    if (relu) add("Relu", {y}, {out}, n.name + "_relu");
  }

  void conv_attributes(onnx::NodeProto* p, const Node& n) {
    if (n.attributes.count("kernel_shape")) set(p, "kernel_shape", n.attr_ints("kernel_shape", {}));  // else from the weights
    set(p, "strides", n.attr_ints("strides", {1, 1}));
    set(p, "pads", n.attr_ints("pads", {0, 0, 0, 0}));
    set(p, "dilations", n.attr_ints("dilations", {1, 1}));
    set(p, "group", n.attr_int("group", 1));
  }
  // The kernel geometry of a QConv2D / DynamicQConv2D: [OC, C/group, kh, kw].
  Shape conv_weight_shape(const Node& n, int64_t rows) {
    const auto k = n.attr_ints("kernel_shape", {});
    const int64_t c = n.attr_int("in_channels", 0), group = n.attr_int("group", 1);
    if (k.size() != 2 || c <= 0 || group <= 0) throw Error(ErrorKind::Format, "ONNX export: node '" + n.name + "' lacks its kernel geometry");
    return {rows, c / group, k[0], k[1]};
  }

  void integer_layer(const Node& n) {
    const L l = L::of(n.inputs.size());
    const bool conv = n.op == "QConv2D";
    const Shape& xs_shape = shapes_.at(n.inputs[L::x]).shape;
    const Shape wshape_probe = conv ? conv_weight_shape(n, tensor(n.inputs[L::codes]).shape()[0]) : Shape{};
    const int64_t k = conv ? wshape_probe[1] * wshape_probe[2] * wshape_probe[3] : n.attr_int("in_features", xs_shape.back());
    const Weights w = weights(n, k);
    const Shape wshape = conv ? conv_weight_shape(n, w.rows) : Shape{w.rows, k};
    const auto [xs, xz] = grid(n.inputs[L::x_scale], n.inputs[L::x_zero_point]);
    const float x_scale_old = tensor(n.inputs[L::x_scale]).data<float>()[0];
    const float x_scale_new = scale_value(xs);
    const std::vector<int32_t> bias = bias_codes(n, l, w, x_scale_old, x_scale_new);
    const bool relu = n.attr_string("activation", "none") == "relu";
    const std::string& out = n.outputs[0];
    std::vector<float> acc_scale(w.rows);
    for (int64_t i = 0; i < w.rows; ++i) acc_scale[i] = x_scale_new * w.scale[i];
    const bool int4 = w.low_bit && opset_ >= 21;

    if (opt_.profile == OnnxProfile::Qdq) {
      const std::string xf = dequantized(n.inputs[L::x], n.inputs[L::x_scale], n.inputs[L::x_zero_point]);
      const std::string wq = codes_init(w, wshape, false, n.name + ".weight_q");
      const std::string wf = fresh(n.name + ".weight_dq");
      std::vector<std::string> dq = {wq, f32_init(w.scale, {w.rows}, n.name + ".weight_scale")};
      dq.push_back(zero_point_init(w, {w.rows}, n.name + ".weight_zero_point", int4));
      set(add("DequantizeLinear", dq, {wf}, n.name + "_weight_dequantize"), "axis", int64_t{0});
      std::vector<std::string> ins = {xf, wf};
      if (l.has_bias()) {
        const std::string bf = fresh(n.name + ".bias_dq");
        set(add("DequantizeLinear", {s32_init(bias, {w.rows}, n.name + ".bias_q"), f32_init(acc_scale, {w.rows}, n.name + ".bias_scale")}, {bf},
                n.name + "_bias_dequantize"),
            "axis", int64_t{0});
        ins.push_back(bf);
      }
      const std::string yf = l.s8_output() || relu ? fresh(out + "_f") : out;
      if (conv) {
        conv_attributes(add("Conv", ins, {yf}, n.name), n);
      } else if (xs_shape.size() == 2) {
        set(add("Gemm", ins, {yf}, n.name), "transB", int64_t{1});
      } else {
        const std::string wt = fresh(n.name + ".weight_dq_t");
        set(add("Transpose", {wf}, {wt}, n.name + "_transpose"), "perm", std::vector<int64_t>{1, 0});
        const std::string m = l.has_bias() ? fresh(out + "_matmul") : yf;
        add("MatMul", {xf, wt}, {m}, n.name);
        if (l.has_bias()) add("Add", {m, ins[2]}, {yf}, n.name + "_bias");
      }
      finish_float(n, l, yf, relu);
      return;
    }
    // QOperator.
    if (conv && l.s8_output()) {
      auto [ys, yz] = grid(n.inputs[l.y_scale], n.inputs[l.y_zero_point]);
      const int32_t y_zero = zero_point_value(yz);
      const bool relu_free = !relu || y_zero == -128;  // ReLU is the clamp at the zero point: free at -128
      const std::string yq = relu_free ? out : fresh(out + "_pre_relu");
      std::vector<std::string> ins = {n.inputs[L::x], xs, xz, codes_init(w, wshape, false, n.name + ".weight_q"),
                                      f32_init(w.scale, {w.rows}, n.name + ".weight_scale"),
                                      zero_point_init(w, {w.rows}, n.name + ".weight_zero_point", false), ys, yz};
      if (l.has_bias()) ins.push_back(s32_init(bias, {w.rows}, n.name + ".bias_q"));
      conv_attributes(add("QLinearConv", ins, {yq}, n.name), n);
      if (!relu_free) {
        const std::string f = fresh(out + "_f"), r = fresh(out + "_relu");
        add("DequantizeLinear", {yq, ys, yz}, {f}, n.name + "_dequantize");
        add("Relu", {f}, {r}, n.name + "_relu");
        add("QuantizeLinear", {r, ys, yz}, {out}, n.name + "_quantize");
      }
      return;
    }
    // Integer product with int32 accumulation (MatMulInteger / ConvInteger), bias added in int32,
    // then one float rescale per output channel.
    const std::string acc = fresh(out + "_acc");
    std::vector<std::string> ins = {n.inputs[L::x], conv ? codes_init(w, wshape, false, n.name + ".weight_q")
                                                         : codes_init(w, {k, w.rows}, true, n.name + ".weight_q_t"),
                                    xz};
    if (!zero_points_zero(w)) ins.push_back(zero_point_init(w, {w.rows}, n.name + ".weight_zero_point", false));
    if (conv) conv_attributes(add("ConvInteger", ins, {acc}, n.name), n);
    else add("MatMulInteger", ins, {acc}, n.name);
    Shape channel_shape = conv ? Shape{w.rows, 1, 1} : Shape{w.rows};
    std::string summed = acc;
    if (l.has_bias()) {
      summed = fresh(out + "_acc_bias");
      add("Add", {acc, s32_init(bias, channel_shape, n.name + ".bias_q")}, {summed}, n.name + "_bias");
    }
    const std::string f = fresh(out + "_acc_f"), yf = l.s8_output() || relu ? fresh(out + "_f") : out;
    set(add("Cast", {summed}, {f}, n.name + "_cast"), "to", static_cast<int64_t>(TP::FLOAT));
    add("Mul", {f, f32_init(acc_scale, channel_shape, n.name + ".output_scale")}, {yf}, n.name + "_rescale");
    finish_float(n, l, yf, relu);
  }
  // After a float result yf: the fused ReLU, then the output grid for s8 output.
  void finish_float(const Node& n, const L& l, std::string yf, bool relu) {
    const std::string& out = n.outputs[0];
    if (relu) {
      const std::string r = l.s8_output() ? fresh(out + "_relu") : out;
      add("Relu", {yf}, {r}, n.name + "_relu");
      yf = r;
    }
    if (l.s8_output()) {
      auto [ys, yz] = grid(n.inputs[l.y_scale], n.inputs[l.y_zero_point]);
      add("QuantizeLinear", {yf, ys, yz}, {out}, n.name + "_quantize");
    }
  }

  // BlockQDense: its weights as a blocked DequantizeLinear (opset 21: 4-bit codes, [K, N] with
  // block_size along K; symmetric layers as int4 codes q - 2^(bits-1) without zero points, affine
  // ones as uint4 codes with uint4 zero points; f32 scales, the fp16 values exactly), then MatMul,
  // bias and ReLU in float. ONNX has no per-block int8 quantization of the input: the runtime
  // computes with f32 activations (ONNX Runtime fuses the pair into its MatMulNBits).
  void block_layer(const Node& n) {
    require_opset(21, "block weights (layer '" + n.name + "', 4-bit codes with a block_size)");
    const int bits = static_cast<int>(n.attr_int("bits", 4));
    const int64_t block = n.attr_int("block_size", 32), k = n.attr_int("in_features", 0);
    const bool affine = n.attr_string("scheme", "symmetric") == "affine";
    const Tensor& packed = tensor(n.inputs[1]);
    const Tensor& scale = tensor(n.inputs[2]);
    const int64_t units = packed.dim(0), blocks = (k + block - 1) / block;
    const std::vector<int32_t> codes = unpack_block_codes(std::span(packed.data<uint8_t>(), packed.nbytes()), units, k, bits, block);
    const int32_t offset = affine ? 0 : 1 << (bits - 1);
    std::vector<int32_t> codes_t(static_cast<size_t>(k * units));  // [K, N]
    for (int64_t u = 0; u < units; ++u)
      for (int64_t i = 0; i < k; ++i) codes_t[static_cast<size_t>(i * units + u)] = codes[static_cast<size_t>(u * k + i)] - offset;
    std::vector<float> scale_t(static_cast<size_t>(blocks * units));
    std::vector<int32_t> zero_t(static_cast<size_t>(blocks * units));
    for (int64_t u = 0; u < units; ++u)
      for (int64_t b = 0; b < blocks; ++b) {
        const size_t i = static_cast<size_t>(u * blocks + b);
        scale_t[static_cast<size_t>(b * units + u)] = f16_to_f32(static_cast<const uint16_t*>(scale.raw())[i]);
        if (affine) zero_t[static_cast<size_t>(b * units + u)] = tensor(n.inputs[3]).data<uint8_t>()[i];
      }
    std::vector<std::string> dq = {int4_init(codes_t, {k, units}, !affine, n.name + ".weight_q_t"),
                                   f32_init(scale_t, {blocks, units}, n.name + ".weight_scale")};
    if (affine) dq.push_back(int4_init(zero_t, {blocks, units}, false, n.name + ".weight_zero_point"));
    const std::string& out = n.outputs[0];
    const std::string w = fresh(n.name + ".weight_t");
    auto* d = add("DequantizeLinear", dq, {w}, n.name + "_dequantize_weight");
    set(d, "axis", int64_t{0});
    set(d, "block_size", block);
    notes_.insert("block-weight layers run with f32 activations in ONNX (lowbit quantizes them per block to int8)");
    const bool relu = n.attr_string("activation", "none") == "relu";
    const size_t bias_input = affine ? 4 : 3;
    const bool bias = n.inputs.size() > bias_input;
    const std::string y = bias || relu ? fresh(out + "_matmul") : out;
    add("MatMul", {n.inputs[0], w}, {y}, n.name);
    std::string cur = y;
    if (bias) {
      const std::string yb = relu ? fresh(out + "_biased") : out;
      add("Add", {cur, use(n.inputs[bias_input])}, {yb}, n.name + "_bias");
      cur = yb;
    }
    if (relu) add("Relu", {cur}, {out}, n.name + "_relu");
  }

  void dynamic_layer(const Node& n) {
    const bool conv = n.op == "DynamicQConv2D";
    const Shape& x_shape = shapes_.at(n.inputs[0]).shape;
    const int64_t rows = tensor(n.inputs[1]).shape()[0];
    const Shape wshape = conv ? conv_weight_shape(n, rows) : Shape{};
    const int64_t k = conv ? wshape[1] * wshape[2] * wshape[3] : n.attr_int("in_features", x_shape.back());
    const Weights w = weights(n, k);
    if (!zero_points_zero(w)) throw Error(ErrorKind::Unsupported, "ONNX export: dynamic layer '" + n.name + "' has weight zero points");
    const std::string& out = n.outputs[0];
    const bool relu = n.attr_string("activation", "none") == "relu";
    if (n.attr_string("granularity", "row") == "row")
      notes_.insert("dynamic layers quantize their input per tensor in ONNX (DynamicQuantizeLinear), lowbit's per row: "
                    "quantize with --granularity tensor for the same grid");
    const std::string xq = fresh(out + "_xq"), xs = fresh(out + "_xscale"), xz = fresh(out + "_xzero"), acc = fresh(out + "_acc");
    add("DynamicQuantizeLinear", {n.inputs[0]}, {xq, xs, xz}, n.name + "_quantize_input");
    std::vector<std::string> ins = {xq, conv ? codes_init(w, wshape, false, n.name + ".weight_q") : codes_init(w, {k, w.rows}, true, n.name + ".weight_q_t"), xz};
    if (conv) conv_attributes(add("ConvInteger", ins, {acc}, n.name), n);
    else add("MatMulInteger", ins, {acc}, n.name);
    const Shape channel_shape = conv ? Shape{w.rows, 1, 1} : Shape{w.rows};
    const std::string f = fresh(out + "_acc_f"), scale = fresh(out + "_scale"), scaled = fresh(out + "_scaled");
    set(add("Cast", {acc}, {f}, n.name + "_cast"), "to", static_cast<int64_t>(TP::FLOAT));
    add("Mul", {xs, f32_init(w.scale, channel_shape, n.name + ".weight_scale")}, {scale}, n.name + "_scale");
    const bool bias = n.inputs.size() > 3;
    const std::string y = bias || relu ? scaled : out;
    add("Mul", {f, scale}, {y}, n.name + "_rescale");
    std::string cur = y;
    if (bias) {
      const Tensor& b = tensor(n.inputs[3]);
      const std::string bname = init([&] { Tensor t = b.clone(); t.reshape(channel_shape); return t; }(), n.name + ".bias");
      const std::string yb = relu ? fresh(out + "_biased") : out;
      add("Add", {cur, bname}, {yb}, n.name + "_bias");
      cur = yb;
    }
    if (relu) add("Relu", {cur}, {out}, n.name + "_relu");
  }

  const Graph& g_;
  OnnxExportOptions opt_;
  std::map<std::string, ValueInfo> shapes_;
  onnx::ModelProto model_;
  onnx::GraphProto* gp_ = nullptr;
  int opset_ = 13;
  std::set<std::string> names_, node_names_, used_initializers_, notes_;
  std::map<std::string, std::pair<std::string, std::string>> symmetric_;
  std::map<std::string, std::string> dequantized_;
  std::map<std::string, float> exported_scales_;
};

}  // namespace
}  // namespace onnx_io

OnnxExport export_onnx_bytes(const Graph& model, const OnnxExportOptions& options) {
  bool integer = false;
  for (const auto& n : model.nodes) integer = integer || traits_of(n).is_integer_layer();
  if (options.profile != OnnxProfile::Float && !integer)
    throw Error(ErrorKind::InvalidArgument, "ONNX export: the model has no integer layers; quantize it first (lowbit quantize) or export --format float");
  if (options.profile == OnnxProfile::Float && integer) {
    OnnxExport r = onnx_io::Exporter(dequantize_model(model), options).run();
    r.notes.insert(r.notes.begin(), "the integer layers are exported in float (dequantized)");
    return r;
  }
  return onnx_io::Exporter(model, options).run();
}

OnnxExport export_onnx(const Graph& model, const std::string& path, const OnnxExportOptions& options) {
  OnnxExport r = export_onnx_bytes(model, options);
  files::write_file_atomically(path, r.bytes);
  return r;
}

OnnxProfile onnx_profile_from_name(const std::string& name) {
  if (name == "float") return OnnxProfile::Float;
  if (name == "qdq") return OnnxProfile::Qdq;
  if (name == "qoperator") return OnnxProfile::QOperator;
  throw Error(ErrorKind::InvalidArgument, "unknown ONNX export format '" + name + "' (float, qdq or qoperator)");
}

}  // namespace lowbit
