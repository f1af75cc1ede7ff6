// The ONNX importer's driver: reads the ModelProto, converts node by node (import_ops.cpp), folds
// constants, then fuses what the runtime runs as one layer and drops what no output needs.
#include "onnx/importer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <queue>

#include "core/file_util.h"
#include "lowbit/error.h"
#include "lowbit/ops.h"
#include "onnx/tensor_proto.h"

namespace lowbit {
namespace onnx_io {
namespace {

// Ops that keep the batch (dimension 0) where it is: a dynamic batch keeps its name through them.
bool keeps_batch(const std::string& op) {
  static const std::set<std::string> ops = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Softmax", "LogSoftmax",
                                            "Conv2D", "MaxPool2D", "AveragePool2D", "GlobalAveragePool",
                                            "BatchNormalization", "Dense", "Flatten", "Dropout", "Cast", "Add",
                                            "Sub", "Mul", "Div", "Gelu", "LayerNormalization", "Sqrt", "Reciprocal",
                                            "Neg", "Erf", "Exp", "Log", "Abs"};
  return ops.count(op) > 0;
}

}  // namespace

Importer::Importer(const onnx::ModelProto& model, std::string source, std::string folder, const OnnxImportOptions& options)
    : model_(model), source_(std::move(source)), folder_(std::move(folder)), options_(options) {}

std::string Importer::input(int i) const {
  if (!has_input(i)) unsupported("input " + std::to_string(i) + " is required");
  auto it = rename_.find(node_->input(i));
  return it == rename_.end() ? node_->input(i) : it->second;
}

std::string Importer::output(int i) const {
  if (i >= node_->output_size() || node_->output(i).empty())
    throw Error(ErrorKind::Format, "output " + std::to_string(i) + " is missing");
  return node_->output(i);
}

const Tensor* Importer::constant(int i) const {
  if (!has_input(i)) return nullptr;
  auto it = constants_.find(input(i));
  return it == constants_.end() ? nullptr : &it->second;
}

const Tensor& Importer::require_constant(int i, const std::string& what) const {
  const Tensor* t = constant(i);
  if (!t) unsupported(what + " (input " + std::to_string(i) + ", '" + node_->input(i) + "') must be a constant");
  return *t;
}

const ValueInfo& Importer::info_of(const std::string& value) const {
  auto it = infos_.find(value);
  if (it == infos_.end()) throw Error(ErrorKind::Internal, "onnx import: no shape for value '" + value + "'");
  return it->second;
}

const ValueInfo& Importer::info(int i) const { return info_of(input(i)); }

std::optional<SymVector> Importer::symbolic(int i) const {
  if (const Tensor* t = constant(i)) {
    if (t->rank() > 1 || (t->dtype() != DType::S64 && t->dtype() != DType::S32)) return std::nullopt;
    const Tensor v = cast(*t, DType::S64);
    SymVector out;
    for (int64_t k = 0; k < v.numel(); ++k) out.push_back({v.data<int64_t>()[k], ""});
    return out;
  }
  auto it = symbolic_.find(input(i));
  if (it == symbolic_.end()) return std::nullopt;
  return it->second;
}

const onnx::AttributeProto* Importer::attr(const std::string& key) const {
  read_attrs_.insert(key);
  for (const auto& a : node_->attribute())
    if (a.name() == key) return &a;
  return nullptr;
}
bool Importer::has_attr(const std::string& key) const { return attr(key) != nullptr; }

int64_t Importer::attr_int(const std::string& key, int64_t fallback) const {
  const auto* a = attr(key);
  if (!a) return fallback;
  if (a->type() != onnx::AttributeProto::INT) unsupported("attribute '" + key + "' must be an integer");
  return a->i();
}
float Importer::attr_float(const std::string& key, float fallback) const {
  const auto* a = attr(key);
  if (!a) return fallback;
  if (a->type() == onnx::AttributeProto::INT) return static_cast<float>(a->i());
  if (a->type() != onnx::AttributeProto::FLOAT) unsupported("attribute '" + key + "' must be a float");
  return a->f();
}
std::string Importer::attr_string(const std::string& key, const std::string& fallback) const {
  const auto* a = attr(key);
  if (!a) return fallback;
  if (a->type() != onnx::AttributeProto::STRING) unsupported("attribute '" + key + "' must be a string");
  return a->s();
}
std::vector<int64_t> Importer::attr_ints(const std::string& key, std::vector<int64_t> fallback) const {
  const auto* a = attr(key);
  if (!a) return fallback;
  if (a->type() != onnx::AttributeProto::INTS) unsupported("attribute '" + key + "' must be a list of integers");
  return {a->ints().begin(), a->ints().end()};
}

void Importer::unsupported(const std::string& what) const { throw Error(ErrorKind::Unsupported, what); }

std::string Importer::fresh(const std::string& hint) { return unique_name(names_, hint); }
std::string Importer::fresh_node(const std::string& hint) { return unique_name(node_names_, hint); }

void Importer::set_constant(const std::string& value, Tensor tensor) {
  infos_[value] = ValueInfo{value, tensor.dtype(), tensor.shape()};
  names_.insert(value);
  constants_[value] = std::move(tensor);
}

std::string Importer::constant_value(Tensor tensor, const std::string& hint) {
  const std::string name = fresh(hint);
  set_constant(name, std::move(tensor));
  return name;
}

void Importer::alias(const std::string& onnx_output, const std::string& value) {
  rename_[onnx_output] = value;
  names_.insert(onnx_output);
}

// Ops that may read a shifted (uint8-as-int8) value: they move codes without reading them as numbers,
// take the maximum (which commutes with the shift), or read them through their zero point.
bool reads_shifted_codes(const std::string& op) {
  static const std::set<std::string> ops = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "MaxPool2D", "Identity", "Transpose",
                                            "DequantizeLinear", "QDense", "QConv2D", "Requantize", "MatMulInteger", "ConvInteger"};
  return ops.count(op) > 0;
}
bool passes_shift(const std::string& op) {
  return op == "Flatten" || op == "Reshape" || op == "Squeeze" || op == "Unsqueeze" || op == "MaxPool2D" || op == "Identity" || op == "Transpose";
}

std::string Importer::s8_zero_point(int i, bool& moved, const std::string& hint) {
  moved = true;
  if (!has_input(i)) {
    Tensor z(DType::S8, {});
    z.data<int8_t>()[0] = -128;
    return constant_value(std::move(z), hint);
  }
  const Tensor& zp = require_constant(i, "the zero point");
  if (zp.dtype() == DType::S8) {
    moved = false;
    return input(i);
  }
  if (zp.dtype() != DType::U8) unsupported("zero point of type " + std::string(name_of(zp.dtype())) + " (int8 or uint8 are supported)");
  Tensor z(DType::S8, zp.shape());
  for (int64_t k = 0; k < zp.numel(); ++k) z.data<int8_t>()[k] = static_cast<int8_t>(zp.data<uint8_t>()[k] - 128);
  return constant_value(std::move(z), hint);
}

std::string Importer::emit(const std::string& op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
                           Attributes attributes, const std::string& suffix) {
  Node node{fresh_node(node_name_ + suffix), op_type, std::move(inputs), std::move(outputs), std::move(attributes)};
  const Op& op = find_op(op_type);
  for (const auto& in : node.inputs)
    if (shifted(in) && !reads_shifted_codes(op_type))
      unsupported("reads uint8 quantization codes ('" + in + "') as numbers, which is not supported");
  std::vector<Shape> shapes;
  std::vector<DType> dtypes;
  bool all_constant = !node.inputs.empty();
  for (const auto& in : node.inputs) {
    if (in.empty()) {  // an optional input left out
      shapes.push_back({});
      dtypes.push_back(DType::F32);
      continue;
    }
    const ValueInfo& vi = info_of(in);
    shapes.push_back(vi.shape);
    dtypes.push_back(vi.dtype);
    all_constant = all_constant && constants_.count(in);
  }
  const std::vector<Shape> out_shapes = op.infer_shapes(node, shapes);
  const std::vector<DType> out_dtypes = op.infer_dtypes(node, dtypes);
  if (out_shapes.size() < node.outputs.size())
    throw Error(ErrorKind::Internal, "onnx import: op " + op_type + " gives fewer outputs than requested");
  if (all_constant && op_type != "Dropout") {
    std::vector<const Tensor*> ins;
    for (const auto& in : node.inputs) ins.push_back(in.empty() ? nullptr : &constants_.at(in));
    std::vector<Tensor> outs(node.outputs.size());
    std::vector<Tensor*> out_ptrs;
    for (auto& t : outs) out_ptrs.push_back(&t);
    op.forward(node, ins, out_ptrs);
    for (size_t k = 0; k < outs.size(); ++k) set_constant(node.outputs[k], outs[k].clone());
    return node.name;
  }
  std::vector<ValueInfo> out_infos;
  for (size_t k = 0; k < node.outputs.size(); ++k) {
    ValueInfo vi{node.outputs[k], out_dtypes.at(k), out_shapes[k]};
    infos_[node.outputs[k]] = vi;
    names_.insert(node.outputs[k]);
    out_infos.push_back(vi);
  }
  propagate_symbols(node, out_infos);
  if (passes_shift(op_type) && shifted(node.inputs[0]))
    for (const auto& out : node.outputs) mark_shifted(out);
  graph_.nodes.push_back(std::move(node));
  return graph_.nodes.back().name;
}

// Dynamic dimensions get names, so that Shape(x) can be followed symbolically: a graph input's
// dim_param (or input:axis), carried through batch-preserving ops at dimension 0; any other
// dynamic dimension a fresh name (equal to nothing else).
void Importer::propagate_symbols(const Node& node, const std::vector<ValueInfo>& outs) {
  for (const auto& vi : outs) {
    ValueInfo& stored = infos_[vi.name];
    stored.symbols.assign(stored.shape.size(), "");
    for (size_t d = 0; d < stored.shape.size(); ++d) {
      if (stored.shape[d] >= 0) continue;
      std::string sym;
      if (d == 0 && keeps_batch(node.op) && !node.inputs.empty()) {
        const ValueInfo& in = info_of(node.inputs[0]);
        if (!in.shape.empty() && in.shape[0] < 0 && in.symbols.size() == in.shape.size()) sym = in.symbols[0];
      }
      stored.symbols[d] = sym.empty() ? "?" + std::to_string(++symbol_counter_) : sym;
    }
  }
}

void Importer::read_opsets() {
  for (const auto& o : model_.opset_import()) {
    const std::string& domain = o.domain();
    if (domain.empty() || domain == "ai.onnx") opset_ = static_cast<int>(o.version());
    else if (domain == "com.microsoft") ms_opset_ = static_cast<int>(o.version());
  }
  if (opset_ == 0) {
    std::string others;
    for (const auto& o : model_.opset_import()) others += (others.empty() ? "" : ", ") + o.domain();
    if (!others.empty())
      throw Error(ErrorKind::Unsupported, source_ + ": the model uses only the domains " + others + " (lowbit reads the default ONNX domain)");
    throw Error(ErrorKind::Format, source_ + ": opset_import has no entry for the default ONNX domain");
  }
  if (opset_ > kOnnxMaxOpset)
    throw Error(ErrorKind::Unsupported, source_ + ": opset " + std::to_string(opset_) + " is newer than this build reads (" +
                                            std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset) + ")");
  if (opset_ < kOnnxMinOpset)
    throw Error(ErrorKind::Unsupported, source_ + ": opset " + std::to_string(opset_) + " is older than this build reads (" +
                                            std::to_string(kOnnxMinOpset) + " to " + std::to_string(kOnnxMaxOpset) + ")");
}

void Importer::read_inputs_and_initializers() {
  const auto& g = model_.graph();
  for (const auto& init : g.initializer()) {
    if (init.name().empty()) throw Error(ErrorKind::Format, source_ + ": an initializer has no name");
    if (constants_.count(init.name())) throw Error(ErrorKind::Format, source_ + ": initializer '" + init.name() + "' is defined twice");
    set_constant(init.name(), tensor_from_proto(init, source_, folder_));
  }
  for (const auto& sparse : g.sparse_initializer())
    throw Error(ErrorKind::Unsupported, source_ + ": sparse initializer '" + sparse.values().name() + "' is not supported");
  for (const auto& in : g.input()) {
    if (constants_.count(in.name())) continue;  // IR < 4 lists initializers as inputs too
    auto bound = options_.constant_inputs.find(in.name());
    if (bound != options_.constant_inputs.end()) {
      set_constant(in.name(), bound->second.clone());
      continue;
    }
    if (!in.type().has_tensor_type())
      throw Error(ErrorKind::Unsupported, source_ + ": graph input '" + in.name() + "' is not a tensor (sequences and maps are not supported)");
    const auto& tt = in.type().tensor_type();
    ValueInfo vi{in.name(), dtype_from_onnx(tt.elem_type(), source_ + ": graph input '" + in.name() + "'"), {}, {}};
    if (!tt.has_shape())
      throw Error(ErrorKind::Unsupported, source_ + ": graph input '" + in.name() + "' has no shape (its rank must be known)");
    bool named = false;
    for (int d = 0; d < tt.shape().dim_size(); ++d) {
      const auto& dim = tt.shape().dim(d);
      if (dim.has_dim_value() && dim.dim_value() >= 0) {
        vi.shape.push_back(dim.dim_value());
        vi.symbols.push_back("");
      } else {
        vi.shape.push_back(-1);
        vi.symbols.push_back(dim.has_dim_param() && !dim.dim_param().empty() ? dim.dim_param() : in.name() + ":" + std::to_string(d));
        named = named || (dim.has_dim_param() && !dim.dim_param().empty());
      }
    }
    infos_[in.name()] = vi;
    names_.insert(in.name());
    ValueInfo declared = vi;
    if (!named) declared.symbols.clear();
    else
      for (auto& s : declared.symbols)
        if (s.find(':') != std::string::npos) s.clear();
    graph_.inputs.push_back(declared);
  }
}

// Kahn's algorithm over the node list (ONNX requires topological order; not every writer obeys).
std::vector<int> Importer::topological_order() {
  const auto& g = model_.graph();
  std::map<std::string, int> producer;
  for (int i = 0; i < g.node_size(); ++i)
    for (const auto& out : g.node(i).output()) {
      if (out.empty()) continue;
      if (producer.count(out) || constants_.count(out) || infos_.count(out))
        throw Error(ErrorKind::Format, source_ + ": value '" + out + "' is defined twice (second time by node '" + g.node(i).name() + "')");
      producer[out] = i;
    }
  std::vector<int> pending(g.node_size(), 0);
  std::vector<std::vector<int>> users(g.node_size());
  for (int i = 0; i < g.node_size(); ++i)
    for (const auto& in : g.node(i).input()) {
      if (in.empty() || constants_.count(in) || infos_.count(in)) continue;
      auto it = producer.find(in);
      if (it == producer.end())
        throw Error(ErrorKind::Format, source_ + ": node '" + g.node(i).name() + "' (" + g.node(i).op_type() + ") reads '" + in +
                                           "', which no node, graph input or initializer defines");
      ++pending[i];
      users[it->second].push_back(i);
    }
  std::priority_queue<int, std::vector<int>, std::greater<int>> ready;  // file order among the ready
  for (int i = 0; i < g.node_size(); ++i)
    if (!pending[i]) ready.push(i);
  std::vector<int> order;
  while (!ready.empty()) {
    const int i = ready.top();
    ready.pop();
    order.push_back(i);
    for (int u : users[i])
      if (--pending[u] == 0) ready.push(u);
  }
  if (order.size() != static_cast<size_t>(g.node_size()))
    for (int i = 0; i < g.node_size(); ++i)
      if (pending[i]) throw Error(ErrorKind::Format, source_ + ": the graph has a cycle through node '" + g.node(i).name() + "' (" + g.node(i).op_type() + ")");
  return order;
}

void Importer::convert(const onnx::NodeProto& node) {
  node_ = &node;
  node_name_ = node.name().empty() ? node.op_type() : node.name();
  read_attrs_.clear();
  const std::string& domain = node.domain();
  const bool microsoft = domain == "com.microsoft";
  if (!domain.empty() && domain != "ai.onnx" && !microsoft)
    unsupported("domain '" + domain + "' is not supported (lowbit reads the default ONNX domain and ONNX Runtime's com.microsoft quantized ops)");
  const auto& table = microsoft ? microsoft_converters() : converters();
  auto it = table.find(node.op_type());
  if (it == table.end()) unsupported("op " + node.op_type() + " is not supported");
  for (int i = 0; i < node.input_size(); ++i)
    if (!node.input(i).empty()) info(i);  // defined (a missing value was reported already)
  it->second(*this);
  for (const auto& a : node.attribute())
    if (!read_attrs_.count(a.name())) unsupported("attribute '" + a.name() + "' is not supported");
  for (int i = 0; i < node.output_size(); ++i) {
    const std::string& out = node.output(i);
    if (!out.empty() && !infos_.count(out) && !rename_.count(out) && !constants_.count(out))
      unsupported("output " + std::to_string(i) + " ('" + out + "') is not supported");
  }
}

Graph Importer::run() {
  read_opsets();
  graph_.name = model_.graph().name();
  read_inputs_and_initializers();
  const auto order = topological_order();
  std::vector<std::string> problems;
  std::set<std::string> poisoned;  // outputs of nodes that failed: their users are not checked
  bool any_unsupported = false;
  const auto& g = model_.graph();
  for (int i : order) {
    const auto& node = g.node(i);
    const bool skip = std::any_of(node.input().begin(), node.input().end(), [&](const std::string& in) { return poisoned.count(in) > 0; });
    auto describe = [&](const std::string& what) {
      return "node '" + node.name() + "' (" + node.op_type() + "): " + what;
    };
    try {
      if (skip) {
        const bool microsoft = node.domain() == "com.microsoft";
        if (!node.domain().empty() && node.domain() != "ai.onnx" && !microsoft)
          throw Error(ErrorKind::Unsupported, "domain '" + node.domain() + "' is not supported (lowbit reads the default ONNX domain)");
        if (!(microsoft ? microsoft_converters() : converters()).count(node.op_type()))
          throw Error(ErrorKind::Unsupported, "op " + node.op_type() + " is not supported");
        for (const auto& out : node.output()) poisoned.insert(out);
        continue;
      }
      convert(node);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::Internal) throw;
      any_unsupported = any_unsupported || e.kind() == ErrorKind::Unsupported;
      problems.push_back(describe(e.what()));
      for (const auto& out : node.output()) poisoned.insert(out);
    }
  }
  if (!problems.empty()) {
    std::string message = source_ + ": " + std::to_string(problems.size()) + " node" + (problems.size() > 1 ? "s" : "") +
                          " cannot be imported:";
    for (size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : " ") + problems[i];
    throw Error(any_unsupported ? ErrorKind::Unsupported : ErrorKind::Format, message);
  }
  for (const auto& out : g.output()) {
    auto it = rename_.find(out.name());
    std::string value = it == rename_.end() ? out.name() : it->second;
    if (!infos_.count(value)) throw Error(ErrorKind::Format, source_ + ": graph output '" + out.name() + "' is not defined");
    if (shifted(value)) {
      // uint8 codes held as int8: back to uint8 (DequantizeLinear with scale 1 adds the 128, Cast).
      node_name_ = out.name();
      if (value == out.name()) {  // the int8 codes get another name; the output name is the uint8 one
        const std::string renamed = fresh(value + "_s8");
        for (auto& n : graph_.nodes) {
          for (auto& o : n.outputs) o = o == value ? renamed : o;
          for (auto& i : n.inputs) i = i == value ? renamed : i;
        }
        infos_[renamed] = infos_.at(value);
        mark_shifted(renamed);
        value = renamed;
      }
      const std::string f = fresh(out.name() + "_codes_f32");
      Tensor z(DType::S8, {});
      z.data<int8_t>()[0] = -128;
      emit("DequantizeLinear", {value, constant_value(Tensor::from_vector({}, std::vector<float>{1.0f}), out.name() + "_unit_scale"),
                                constant_value(std::move(z), out.name() + "_s8_zero_point")},
           {f}, {}, "_to_u8");
      emit("Cast", {f}, {out.name()}, {{"to", "u8"}}, "_cast");
      graph_.outputs.push_back(out.name());
      continue;
    }
    // An output that is a graph input under its own name is read straight from the feeds; one that
    // is another value (an alias, a constant, another input) gets its name through a copy.
    if (value != out.name() || constants_.count(value)) {
      node_name_ = out.name();
      if (value == out.name()) {  // a constant under the output's own name: the copy reads it renamed
        Tensor t = constants_.at(value);
        constants_.erase(value);
        value = constant_value(std::move(t), out.name() + "_value");
      }
      Node copy{fresh_node(out.name() + "_identity"), "Identity", {value}, {out.name()}, {}};
      infos_[out.name()] = info_of(value);
      graph_.nodes.push_back(std::move(copy));
    }
    graph_.outputs.push_back(out.name());
  }
  fuse_and_prune();
  graph_.metadata["source"] = "onnx";
  graph_.metadata["onnx_opset"] = std::to_string(opset_);
  if (!model_.producer_name().empty())
    graph_.metadata["onnx_producer"] = model_.producer_name() + (model_.producer_version().empty() ? "" : " " + model_.producer_version());
  graph_.validate();
  return std::move(graph_);
}

// QDQ models (ONNX Runtime's quantizer, TensorRT's tools): a float Dense or Conv2D whose input is
// DequantizeLinear(x int8, per tensor) and whose weights are DequantizeLinear of int8 codes becomes
// the integer layer (QDense / QConv2D) on those codes; its bias (DequantizeLinear of int32 at
// x_scale * w_scale, or float) becomes int32; a QuantizeLinear that alone reads its output gives
// it s8 output. The arithmetic is then integer-only, as in the runtimes that fuse these groups.
void Importer::fuse_qdq() {
  auto scalar_constant = [&](const std::string& name) -> const Tensor* {
    auto it = constants_.find(name);
    return it != constants_.end() && it->second.numel() == 1 ? &it->second : nullptr;
  };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    Node& n = graph_.nodes[i];
    const bool conv = n.op == "Conv2D";
    if ((n.op != "Dense" && !conv) || n.inputs.size() < 2) continue;
    // The input: DequantizeLinear of int8 codes, one scale and zero point.
    const Node* dq = nullptr;
    for (const auto& m : graph_.nodes)
      if (m.op == "DequantizeLinear" && m.outputs[0] == n.inputs[0]) dq = &m;
    if (!dq || info_of(dq->inputs[0]).dtype != DType::S8 || !scalar_constant(dq->inputs[1]) ||
        (dq->inputs.size() > 2 && !scalar_constant(dq->inputs[2])))
      continue;
    // The weights: int8 codes, one scale per tensor or per output channel.
    auto wo = origins.find(n.inputs[1]);
    if (wo == origins.end() || wo->second.codes.dtype() != DType::S8) continue;
    const QuantOrigin& w = wo->second;
    const int64_t units = w.codes.shape()[0], k = w.codes.numel() / std::max<int64_t>(units, 1);
    if (w.axis > 0 || (w.axis == -1 && w.scale.numel() != 1) || (w.axis == 0 && w.scale.numel() != units)) continue;
    const int8_t* codes = w.codes.data<int8_t>();
    if (std::any_of(codes, codes + w.codes.numel(), [](int8_t c) { return c == -128; })) continue;  // the kernels' range is [-127, 127]
    const float x_scale = cast(*scalar_constant(dq->inputs[1]), DType::F32).data<float>()[0];
    Tensor w_scale(DType::F32, {units}), w_zero(DType::S32, {units});
    const Tensor ws = cast(w.scale, DType::F32);
    const Tensor wz = w.zero_point.defined() ? cast(w.zero_point, DType::S32) : Tensor();
    for (int64_t u = 0; u < units; ++u) {
      w_scale.data<float>()[u] = ws.data<float>()[ws.numel() == 1 ? 0 : u];
      w_zero.data<int32_t>()[u] = wz.defined() ? wz.data<int32_t>()[wz.numel() == 1 ? 0 : u] : 0;
    }
    // The bias at x_scale * w_scale: the int32 codes when they are on that grid, else rounded.
    std::string bias;
    if (n.inputs.size() > 2) {
      const Tensor& b = constants_.at(n.inputs[2]);
      Tensor q(DType::S32, {units});
      auto bo = origins.find(n.inputs[2]);
      for (int64_t u = 0; u < units; ++u) {
        const double grid = static_cast<double>(x_scale) * w_scale.data<float>()[u];
        double v = std::nearbyint(b.data<float>()[u] / grid);
        if (bo != origins.end() && bo->second.codes.dtype() == DType::S32 && bo->second.codes.numel() == units &&
            !bo->second.zero_point.defined()) {
          const Tensor bs = cast(bo->second.scale, DType::F32);
          const double s = bs.data<float>()[bs.numel() == 1 ? 0 : u];
          if (std::fabs(s - grid) <= 1e-6 * grid) v = bo->second.codes.data<int32_t>()[u];
        }
        q.data<int32_t>()[u] = static_cast<int32_t>(std::clamp(v, -2147483648.0, 2147483647.0));
      }
      bias = constant_value(std::move(q), n.name + ".bias_q");
    }
    // The output: s8 when one QuantizeLinear (per tensor, int8) alone reads it.
    int readers = 0;
    Node* quantize = nullptr;
    for (auto& m : graph_.nodes)
      for (const auto& in : m.inputs)
        if (in == n.outputs[0]) {
          ++readers;
          if (m.op == "QuantizeLinear" && scalar_constant(m.inputs[1]) && m.inputs.size() > 2 && scalar_constant(m.inputs[2])) quantize = &m;
        }
    const bool is_output = std::find(graph_.outputs.begin(), graph_.outputs.end(), n.outputs[0]) != graph_.outputs.end();
    if (readers != 1 || is_output) quantize = nullptr;
    Tensor codes2 = w.codes.clone();
    codes2.reshape({units, k});
    std::string x_zero;
    if (dq->inputs.size() > 2) x_zero = dq->inputs[2];
    else x_zero = constant_value(Tensor(DType::S8, {}), n.name + ".x_zero_point");
    std::vector<std::string> inputs = {dq->inputs[0], constant_value(std::move(codes2), n.name + ".weight_codes"),
                                       constant_value(std::move(w_scale), n.name + ".weight_scale"),
                                       constant_value(std::move(w_zero), n.name + ".weight_zero_point"), dq->inputs[1], x_zero};
    std::string output = n.outputs[0];
    if (quantize) {
      inputs.push_back(quantize->inputs[1]);
      inputs.push_back(quantize->inputs[2]);
      output = quantize->outputs[0];
    }
    if (!bias.empty()) inputs.push_back(bias);
    Attributes attrs{{"activation", n.attr_string("activation", "none")}};
    if (conv) {
      const Shape& w4 = info_of(n.inputs[1]).shape;
      const int64_t group = n.attr_int("group", 1);
      attrs["in_channels"] = w4[1] * group;
      attrs["kernel_shape"] = std::vector<int64_t>{w4[2], w4[3]};
      for (const char* key : {"strides", "pads", "dilations", "group"})
        if (n.attributes.count(key)) attrs[key] = n.attributes.at(key);
    } else {
      attrs["in_features"] = k;
    }
    Node q{n.name, conv ? "QConv2D" : "QDense", std::move(inputs), {output}, std::move(attrs)};
    const ValueInfo out_info = info_of(n.outputs[0]);
    infos_[output] = ValueInfo{output, quantize ? DType::S8 : DType::F32, out_info.shape, out_info.symbols};
    if (quantize) {
      const std::string removed = quantize->outputs[0];
      graph_.nodes.erase(std::find_if(graph_.nodes.begin(), graph_.nodes.end(),
                                      [&](const Node& m) { return m.outputs[0] == removed && m.op == "QuantizeLinear"; }));
    }
    graph_.nodes[i] = std::move(q);
  }
  // DequantizeLinear -> MaxPool -> QuantizeLinear on one grid is max-pooling of the codes (the
  // maximum commutes with the monotone quantization): exact, and no float tensor between.
  auto value_of = [&](const std::string& name) { return cast(*scalar_constant(name), DType::F32).data<float>()[0]; };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    Node& m = graph_.nodes[i];
    if (m.op != "MaxPool2D") continue;
    const Node* dq = nullptr;
    Node* q = nullptr;
    int readers = 0;
    for (auto& other : graph_.nodes) {
      if (other.op == "DequantizeLinear" && other.outputs[0] == m.inputs[0]) dq = &other;
      for (const auto& in : other.inputs)
        if (in == m.outputs[0]) {
          ++readers;
          if (other.op == "QuantizeLinear") q = &other;
        }
    }
    const bool is_output = std::find(graph_.outputs.begin(), graph_.outputs.end(), m.outputs[0]) != graph_.outputs.end();
    if (!dq || !q || readers != 1 || is_output || dq->inputs.size() < 3 || q->inputs.size() < 3 ||
        info_of(dq->inputs[0]).dtype != DType::S8)
      continue;
    if (!scalar_constant(dq->inputs[1]) || !scalar_constant(dq->inputs[2]) || !scalar_constant(q->inputs[1]) ||
        !scalar_constant(q->inputs[2]) || value_of(dq->inputs[1]) != value_of(q->inputs[1]) ||
        value_of(dq->inputs[2]) != value_of(q->inputs[2]))
      continue;
    const std::string out = q->outputs[0];
    infos_[out] = ValueInfo{out, DType::S8, info_of(m.outputs[0]).shape, info_of(m.outputs[0]).symbols};
    m.inputs[0] = dq->inputs[0];
    m.outputs[0] = out;
    graph_.nodes.erase(std::find_if(graph_.nodes.begin(), graph_.nodes.end(),
                                    [&](const Node& n) { return n.op == "QuantizeLinear" && n.outputs[0] == out; }));
  }
}

// ONNX Runtime's dynamic quantization (quantize_dynamic) writes each layer as
//   DynamicQuantizeLinear(x) -> q, s, zp;  MatMulInteger(q, W, zp, wz) or ConvInteger(...) -> acc;
//   Cast(acc) -> f32;  Mul(that, Mul(s, w_scale));  optionally Add(bias), Relu
// which is DynamicQDense / DynamicQConv2D with per-tensor activations ("tensor" granularity): the
// weights' codes minus their zero point, when they lie in [-127, 127], times w_scale. Every
// other arrangement keeps the generic ops, which compute ONNX's definition.
void Importer::fuse_dynamic() {
  // The one node that reads `value`, when exactly one does and it is not a graph output.
  auto only_reader = [&](const std::string& value) -> Node* {
    if (std::find(graph_.outputs.begin(), graph_.outputs.end(), value) != graph_.outputs.end()) return nullptr;
    Node* reader = nullptr;
    for (auto& n : graph_.nodes)
      for (const auto& in : n.inputs)
        if (in == value) {
          if (reader && reader != &n) return nullptr;
          reader = &n;
        }
    return reader;
  };
  auto constant = [&](const std::string& value) -> const Tensor* {
    auto it = constants_.find(value);
    return it == constants_.end() ? nullptr : &it->second;
  };
  // A constant with one value, or `units` values along `axis` of a tensor of rank `rank` (every
  // other dimension 1), as f32 [units]; undefined otherwise.
  auto per_channel = [&](const Tensor* t, int64_t units, int64_t axis, size_t rank) {
    if (!t || t->numel() == 0) return Tensor();
    if (t->numel() != 1) {
      const size_t r = static_cast<size_t>(t->rank());
      if (t->numel() != units || r > rank || static_cast<int64_t>(rank - r) > axis) return Tensor();
      const size_t at = static_cast<size_t>(axis) - (rank - r);  // t's dims align right
      for (size_t d = 0; d < r; ++d)
        if (d != at && t->shape()[d] != 1) return Tensor();
    }
    const Tensor f = cast(*t, DType::F32);
    Tensor out(DType::F32, {units});
    for (int64_t u = 0; u < units; ++u) out.data<float>()[u] = f.data<float>()[f.numel() == 1 ? 0 : u];
    return out;
  };
  for (bool changed = true; changed;) {
   changed = false;
   for (size_t i = 0; i < graph_.nodes.size() && !changed; ++i) {
    const Node mm = graph_.nodes[i];
    const bool conv = mm.op == "ConvInteger";
    if ((mm.op != "MatMulInteger" && !conv) || mm.inputs.size() != 4) continue;
    const Node* dq = producer_of(mm.inputs[0]);
    if (!dq || dq->op != "DynamicQuantizeLinear" || mm.inputs[0] != dq->outputs[0] || mm.inputs[2] != dq->outputs[2]) continue;
    const Tensor* w = constant(mm.inputs[1]);
    const Tensor* wz = constant(mm.inputs[3]);
    if (!w || !wz || (conv ? w->rank() != 4 : w->rank() != 2)) continue;
    const int64_t units = conv ? w->shape()[0] : w->shape()[1], k = w->numel() / units;
    if (wz->numel() != 1 && wz->numel() != units) continue;
    // codes [units, k] = w - wz (MatMulInteger's b is [K, N]: transposed).
    const Tensor w32 = cast(*w, DType::S32), wz32 = cast(*wz, DType::S32);
    Tensor codes(DType::S8, {units, k});
    bool fits = true;
    for (int64_t u = 0; u < units && fits; ++u)
      for (int64_t j = 0; j < k; ++j) {
        const int32_t c = w32.data<int32_t>()[conv ? u * k + j : j * units + u] - wz32.data<int32_t>()[wz->numel() == 1 ? 0 : u];
        if (c < -127 || c > 127) {
          fits = false;
          break;
        }
        codes.data<int8_t>()[u * k + j] = static_cast<int8_t>(c);
      }
    if (!fits) continue;
    // acc -> Cast to f32 -> Mul by (s * w_scale).
    Node* to_float = only_reader(mm.outputs[0]);
    if (!to_float || to_float->op != "Cast" || to_float->attr_string("to", "") != "f32") continue;
    Node* rescale = only_reader(to_float->outputs[0]);
    if (!rescale || rescale->op != "Mul" || rescale->inputs.size() != 2) continue;
    const std::string factor = rescale->inputs[rescale->inputs[0] == to_float->outputs[0] ? 1 : 0];
    const Node* scales = producer_of(factor);
    if (!scales || scales->op != "Mul" || scales->inputs.size() != 2) continue;
    const bool s_first = scales->inputs[0] == dq->outputs[1];
    if (!s_first && scales->inputs[1] != dq->outputs[1]) continue;
    const size_t out_rank = info_of(mm.outputs[0]).shape.size();
    Tensor w_scale = per_channel(constant(scales->inputs[s_first ? 1 : 0]), units, conv ? 1 : static_cast<int64_t>(out_rank) - 1, out_rank);
    if (!w_scale.defined()) continue;
    std::set<std::string> absorbed = {to_float->name, rescale->name};  // node names
    std::string output = rescale->outputs[0], bias;
    if (Node* add = only_reader(output); add && add->op == "Add" && add->inputs.size() == 2) {
      const std::string other = add->inputs[add->inputs[0] == output ? 1 : 0];
      Tensor b = per_channel(constant(other), units, conv ? 1 : static_cast<int64_t>(out_rank) - 1, out_rank);
      if (b.defined() && constant(other)->numel() == units) {
        bias = constant_value(std::move(b), mm.name + ".bias");
        output = add->outputs[0];
        absorbed.insert(add->name);
      }
    }
    std::string activation = "none";
    if (Node* relu = only_reader(output); relu && relu->op == "Relu") {
      activation = "relu";
      output = relu->outputs[0];
      absorbed.insert(relu->name);
    }
    std::vector<std::string> inputs = {dq->inputs[0], constant_value(std::move(codes), mm.name + ".weight_codes"),
                                       constant_value(std::move(w_scale), mm.name + ".weight_scale")};
    if (!bias.empty()) inputs.push_back(bias);
    Attributes attrs{{"activation", activation}, {"granularity", "tensor"}};
    if (conv) {
      attrs["in_channels"] = w->shape()[1] * mm.attr_int("group", 1);
      for (const char* key : {"kernel_shape", "strides", "pads", "dilations", "group"})
        if (mm.attributes.count(key)) attrs[key] = mm.attributes.at(key);
    } else {
      attrs["in_features"] = k;
    }
    graph_.nodes[i] = Node{mm.name, conv ? "DynamicQConv2D" : "DynamicQDense", std::move(inputs), {output}, std::move(attrs)};
    // The Cast, Mul (, Add, Relu) are now inside the layer; the scale product and the
    // DynamicQuantizeLinear go when nothing else reads them (pruning).
    std::erase_if(graph_.nodes, [&](const Node& n) { return absorbed.count(n.name) > 0; });
    changed = true;
   }
  }
}

// LayerNormalization as exporters spell it out of primitives (PyTorch before opset 17, Keras,
// hand-written BERTs):
//   m = ReduceMean(x, trailing axes)   d = Sub(x, m)   v = ReduceMean(Pow(d, 2) or Mul(d, d))
//   n = Div(d, Sqrt(Add(v, eps)))  or  Mul(d, Reciprocal(Sqrt(Add(v, eps))))
//   [y = Mul(n, scale)] [z = Add(y, bias)]        (scale, bias, eps constants)
// becomes one LayerNormalization node in place of the last node of the chain (the others, read by
// nothing else, are pruned). Each intermediate value must be read only inside the pattern.
void Importer::fuse_layer_norm() {
  std::map<std::string, int> count = readers();
  auto single = [&](const std::string& v) { return count[v] == 1; };
  auto node_of = [&](const std::string& v, const char* op) -> Node* {
    Node* p = producer_of(v);
    return p && p->op == op ? p : nullptr;
  };
  auto constant_f32 = [&](const std::string& v) -> const Tensor* {
    auto c = constants_.find(v);
    return c != constants_.end() && c->second.dtype() == DType::F32 ? &c->second : nullptr;
  };
  // The axes a ReduceMean with keepdims reduces, as a count of trailing axes of a rank-r input (0 if not trailing).
  auto trailing = [&](const Node& r, size_t rank) -> int64_t {
    if (r.attr_int("keepdims", 1) != 1) return 0;
    std::vector<int64_t> axes = r.attr_ints("axes", {});
    if (axes.empty()) return 0;
    for (auto& a : axes) a = a < 0 ? a + static_cast<int64_t>(rank) : a;
    std::sort(axes.begin(), axes.end());
    for (size_t i = 0; i < axes.size(); ++i)
      if (axes[i] != static_cast<int64_t>(rank - axes.size() + i)) return 0;
    return static_cast<int64_t>(axes.size());
  };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    Node& last = graph_.nodes[i];
    // n = d / s  or  d * (1 / s)
    if (last.op != "Div" && last.op != "Mul") continue;
    if (last.inputs.size() != 2) continue;
    std::string d = last.inputs[0], s;
    if (last.op == "Div") {
      s = last.inputs[1];
    } else {
      Node* r = node_of(last.inputs[1], "Reciprocal");
      if (!r || !single(last.inputs[1])) continue;
      s = r->inputs[0];
    }
    Node* sqrt = node_of(s, "Sqrt");
    if (!sqrt || !single(s)) continue;
    Node* add_eps = node_of(sqrt->inputs[0], "Add");
    if (!add_eps || !single(sqrt->inputs[0]) || add_eps->inputs.size() != 2) continue;
    const std::optional<float> eps = scalar_f32(add_eps->inputs[1]);
    if (!eps) continue;
    Node* var = node_of(add_eps->inputs[0], "ReduceMean");
    if (!var || !single(add_eps->inputs[0])) continue;
    Node* square = producer_of(var->inputs[0]);
    if (!square || !single(var->inputs[0])) continue;
    const bool squares_d = (square->op == "Pow" && square->inputs[0] == d && scalar_f32(square->inputs[1]) == 2.0f) ||
                           (square->op == "Mul" && square->inputs[0] == d && square->inputs[1] == d);
    if (!squares_d) continue;
    Node* sub = node_of(d, "Sub");
    if (!sub) continue;
    const int expected_reads = square->op == "Mul" ? 3 : 2;  // d feeds the square and the division
    if (count[d] != expected_reads) continue;
    const std::string x = sub->inputs[0];
    Node* mean = node_of(sub->inputs[1], "ReduceMean");
    if (!mean || mean->inputs[0] != x || !single(sub->inputs[1])) continue;
    const size_t rank = info_of(x).shape.size();
    const int64_t axes = trailing(*mean, rank);
    if (axes == 0 || trailing(*var, rank) != axes) continue;
    const Shape& xs = info_of(x).shape;
    const size_t first = rank - static_cast<size_t>(axes);  // the first normalized axis
    int64_t n = 1;  // values normalized together (-1: known only at run time)
    for (size_t k = first; k < rank; ++k) n = xs[k] < 0 || n < 0 ? -1 : n * xs[k];
    // A scale / bias constant that varies only along the normalized axes (or not at all).
    auto fits = [&](const Tensor& t) {
      const size_t t_rank = static_cast<size_t>(t.rank());
      if (t_rank > rank) return false;
      for (size_t k = 0; k < t_rank; ++k)
        if (rank - t_rank + k < first && t.shape()[k] != 1) return false;
      return t.numel() == 1 || t.numel() == n;
    };
    Node* end = &last;
    std::string scale, bias;
    if (Node* m = single(last.outputs[0]) ? reader_of(last.outputs[0], "Mul", 2) : nullptr) {
      const Tensor* c = constant_f32(m->inputs[1]);
      if (c && fits(*c)) scale = m->inputs[1], end = m;
    }
    if (Node* m = !scale.empty() && single(end->outputs[0]) ? reader_of(end->outputs[0], "Add", 2) : nullptr) {
      const Tensor* c = constant_f32(m->inputs[1]);
      if (c && fits(*c)) bias = m->inputs[1], end = m;
    }
    auto flat = [&](const std::string& v, const std::string& hint) {
      Tensor t = constants_.at(v).clone();
      t.reshape({t.numel()});
      return constant_value(std::move(t), hint);
    };
    std::vector<std::string> inputs = {x};
    if (scale.empty()) {
      Tensor ones(DType::F32, {1});
      ones.data<float>()[0] = 1.0f;
      inputs.push_back(constant_value(std::move(ones), last.name + ".scale"));
    } else {
      inputs.push_back(flat(scale, last.name + ".scale"));
    }
    if (!bias.empty()) inputs.push_back(flat(bias, last.name + ".bias"));
    end->op = "LayerNormalization";
    end->inputs = std::move(inputs);
    end->attributes = {{"axis", -axes}, {"epsilon", static_cast<double>(*eps)}};
    // The chain's first nodes now feed nothing that matters; counts are stale: start again.
    count = readers();
  }
}

// GELU as exporters spell it (PyTorch before opset 20): 0.5 * x * (1 + erf(x / sqrt 2)), written
//   a = Div(x, sqrt 2) or Mul(x, 1 / sqrt 2);  c = Add(Erf(a), 1);  Mul(Mul(x, c), 0.5)
// (either operand order of the Add and the two outer Muls) becomes one Gelu node in place of the last Mul.
void Importer::fuse_gelu() {
  std::map<std::string, int> count = readers();
  auto scalar = [&](const std::string& v, double want) {  // a one-value f32 constant within 1e-6 of `want`
    const std::optional<float> c = scalar_f32(v);
    return c && std::fabs(*c - want) <= 1e-6 * std::fabs(want);
  };
  for (Node& last : graph_.nodes) {
    if (last.op != "Mul" || last.inputs.size() != 2) continue;
    // last = Mul(d, 0.5)
    const bool half_second = scalar(last.inputs[1], 0.5), half_first = scalar(last.inputs[0], 0.5);
    if (half_second == half_first) continue;
    const std::string d = half_second ? last.inputs[0] : last.inputs[1];
    Node* mul = producer_of(d);
    if (!mul || mul->op != "Mul" || count[d] != 1 || mul->inputs.size() != 2) continue;
    for (int side = 0; side < 2; ++side) {  // mul = Mul(x, c), c = Add(Erf(a), 1)
      const std::string x = mul->inputs[static_cast<size_t>(side)], c = mul->inputs[static_cast<size_t>(1 - side)];
      Node* add = producer_of(c);
      if (!add || add->op != "Add" || count[c] != 1) continue;
      const std::string e = scalar(add->inputs[1], 1.0) ? add->inputs[0] : scalar(add->inputs[0], 1.0) ? add->inputs[1] : "";
      Node* erf = e.empty() ? nullptr : producer_of(e);
      if (!erf || erf->op != "Erf" || count[e] != 1) continue;
      Node* scale = producer_of(erf->inputs[0]);
      if (!scale || count[erf->inputs[0]] != 1 || scale->inputs.size() != 2 || scale->inputs[0] != x) continue;
      const bool ok = (scale->op == "Div" && scalar(scale->inputs[1], std::sqrt(2.0))) ||
                      (scale->op == "Mul" && scalar(scale->inputs[1], 1.0 / std::sqrt(2.0)));
      if (!ok) continue;
      last.op = "Gelu";
      last.inputs = {x};
      last.attributes = {};
      // (the chain's other nodes, read by nothing now, are pruned)
      count = readers();
      break;
    }
  }
}

// Multi-head attention as exporters write it (HF transformers' BERT, hand-written PyTorch):
//   qh = Transpose(Reshape(q, [B, S, H, D]), perm 0 2 1 3)           (likewise vh from v)
//   kt = Transpose(Reshape(k, ...), perm 0 2 3 1)  or  Transpose(Transpose(..., 0 2 1 3), 0 1 3 2)
//   s = MatMul(qh, kt);  [s = Div(s, c) or Mul(s, c)];  [s = Add(s, mask) or Add(mask, s)]
//   o = MatMul(Softmax(s, last axis), vh);  y = Reshape(Transpose(o, 0 2 1 3), [B, S, H * Dv])
// becomes Attention(q, k, v[, mask]) with num_heads H and scale 1 / c (or c) in place of the
// last Reshape; every intermediate value must be read only inside the pattern.
void Importer::fuse_attention() {
  drop_unread();  // the Shape nodes of the head reshapes (followed statically) would count as readers
  std::map<std::string, int> count = readers();
  auto single = [&](const std::string& v) { return count[v] == 1; };
  auto node_of = [&](const std::string& v, const char* op) -> Node* {
    Node* p = producer_of(v);
    return p && p->op == op && single(v) ? p : nullptr;
  };
  auto perm_is = [](const Node* n, std::vector<int64_t> perm) { return n && n->attr_ints("perm", {}) == perm; };
  // A concrete stand-in for a declared shape: sizes known only at run time become 3, 5, 7, ...
  auto probe = [](Shape s) {
    int64_t next = 3;
    for (auto& d : s)
      if (d < 0) d = next, next += 2;
    return s;
  };
  auto reshaped = [&](const Node& r, const Shape& in) -> std::optional<Shape> {
    try {
      const Shape shapes[] = {in};
      return find_op("Reshape").infer_shapes(r, shapes)[0];
    } catch (const Error&) {
      return std::nullopt;
    }
  };
  // x [B, S, H*D] split into heads: Reshape to [B, S, H, D]; returns the source value and sets h, d.
  auto head_split = [&](const Node* r, int64_t& h, int64_t& d) -> std::string {
    if (!r || r->op != "Reshape" || r->inputs.size() != 1) return "";
    const Shape in = info_of(r->inputs[0]).shape;
    if (in.size() != 3 || in[2] < 0) return "";
    const Shape p = probe(in);
    const std::optional<Shape> out = reshaped(*r, p);
    if (!out || out->size() != 4 || (*out)[0] != p[0] || (*out)[1] != p[1] || (*out)[2] * (*out)[3] != in[2]) return "";
    h = (*out)[2], d = (*out)[3];
    return r->inputs[0];
  };
  for (Node& softmax : graph_.nodes) {
    if (softmax.op != "Softmax" || softmax.inputs.empty()) continue;
    const Shape& scores_shape = info_of(softmax.inputs[0]).shape;
    const int64_t axis = softmax.attr_int("axis", -1);
    if (scores_shape.size() != 4 || (axis != -1 && axis != 3) || !single(softmax.outputs[0])) continue;
    // o = MatMul(probabilities, vh), read once, then the head merge.
    Node* out_mm = reader_of(softmax.outputs[0], "MatMul", 2);
    if (!out_mm || !single(out_mm->outputs[0])) continue;
    Node* merge_t = reader_of(out_mm->outputs[0], "Transpose", 1);
    if (!perm_is(merge_t, {0, 2, 1, 3}) || !single(merge_t->outputs[0])) continue;
    Node* merge = reader_of(merge_t->outputs[0], "Reshape", 1);
    if (!merge) continue;
    // The scores: [Add(., mask)] of [Div/Mul(., c)] of MatMul(qh, kt).
    std::string s = softmax.inputs[0], mask;
    if (Node* add = node_of(s, "Add"); add && add->inputs.size() == 2) {
      for (int side = 0; side < 2 && mask.empty(); ++side) {
        Node* p = producer_of(add->inputs[static_cast<size_t>(side)]);
        if (p && (p->op == "MatMul" || p->op == "Div" || p->op == "Mul") && info_of(add->inputs[static_cast<size_t>(1 - side)]).dtype == DType::F32)
          s = add->inputs[static_cast<size_t>(side)], mask = add->inputs[static_cast<size_t>(1 - side)];
      }
      if (mask.empty()) continue;
    }
    float scale = 0.0f;  // 0: the default, 1 / sqrt(D)
    if (Node* p = producer_of(s); p && (p->op == "Div" || p->op == "Mul") && single(s) && p->inputs.size() == 2) {
      const std::optional<float> c = scalar_f32(p->inputs[1]);
      if (!c || *c == 0.0f || !std::isfinite(*c)) continue;
      scale = p->op == "Div" ? 1.0f / *c : *c;
      s = p->inputs[0];
    }
    Node* scores = node_of(s, "MatMul");
    if (!scores || scores->inputs.size() != 2) continue;
    // qh, kt and vh from the projections.
    Node* qt = node_of(scores->inputs[0], "Transpose");
    Node* vt = node_of(out_mm->inputs[1], "Transpose");
    if (!perm_is(qt, {0, 2, 1, 3}) || !perm_is(vt, {0, 2, 1, 3})) continue;
    Node* kt = node_of(scores->inputs[1], "Transpose");
    Node* k_reshape = nullptr;
    if (perm_is(kt, {0, 2, 3, 1})) {
      k_reshape = node_of(kt->inputs[0], "Reshape");
    } else if (perm_is(kt, {0, 1, 3, 2})) {
      Node* kh = node_of(kt->inputs[0], "Transpose");
      if (perm_is(kh, {0, 2, 1, 3})) k_reshape = node_of(kh->inputs[0], "Reshape");
    }
    int64_t hq = 0, dq = 0, hk = 0, dk = 0, hv = 0, dv = 0;
    const std::string q = head_split(node_of(qt->inputs[0], "Reshape"), hq, dq);
    const std::string k = head_split(k_reshape, hk, dk);
    const std::string v = head_split(node_of(vt->inputs[0], "Reshape"), hv, dv);
    if (q.empty() || k.empty() || v.empty() || hq != hk || hq != hv || dq != dk) continue;
    // The merge: [B, S, H, Dv] -> [B, S, H * Dv].
    Shape merged_in = probe(info_of(q).shape);
    merged_in = {merged_in[0], merged_in[1], hv, dv};
    const std::optional<Shape> merged = reshaped(*merge, merged_in);
    if (!merged || *merged != Shape{merged_in[0], merged_in[1], hv * dv}) continue;
    Attributes attributes = {{"num_heads", hq}};
    if (scale != 0.0f) attributes["scale"] = static_cast<double>(scale);
    merge->op = "Attention";
    merge->inputs = {q, k, v};
    if (!mask.empty()) merge->inputs.push_back(mask);
    merge->attributes = std::move(attributes);
    count = readers();  // the pattern's other nodes, read by nothing now, are pruned
  }
}

std::optional<float> Importer::scalar_f32(const std::string& value) const {
  auto c = constants_.find(value);
  if (c == constants_.end() || c->second.dtype() != DType::F32 || c->second.numel() != 1) return std::nullopt;
  return c->second.data<float>()[0];
}

std::map<std::string, int> Importer::readers() const {
  std::map<std::string, int> count;
  for (const auto& n : graph_.nodes)
    for (const auto& in : n.inputs) ++count[in];
  for (const auto& out : graph_.outputs) count[out] += 1000;  // never fuse away a graph output
  return count;
}

Node* Importer::reader_of(const std::string& value, const std::string& op, size_t inputs) {
  for (Node& n : graph_.nodes)
    if (n.op == op && n.inputs.size() == inputs && n.inputs[0] == value) return &n;
  return nullptr;
}

Node* Importer::producer_of(const std::string& value) {
  const int i = graph_.producer(value);
  return i < 0 ? nullptr : &graph_.nodes[static_cast<size_t>(i)];
}

// Drops nodes whose outputs nothing reads (e.g. Shape nodes whose result was followed statically).
void Importer::drop_unread() {
  bool changed = true;
  while (changed) {
    changed = false;
    auto count = readers();
    for (size_t i = graph_.nodes.size(); i-- > 0;) {
      const Node& n = graph_.nodes[i];
      const bool used = std::any_of(n.outputs.begin(), n.outputs.end(), [&](const std::string& o) { return count[o] > 0; });
      if (!used) {
        graph_.nodes.erase(graph_.nodes.begin() + static_cast<std::ptrdiff_t>(i));
        changed = true;
      }
    }
  }
}

// Joins what lowbit runs as one layer, then drops nodes no output needs and turns the constants
// that remaining nodes read into initializers.
void Importer::fuse_and_prune() {
  fuse_dynamic();
  fuse_layer_norm();
  fuse_gelu();
  fuse_attention();
  bool changed = true;
  while (changed) {
    changed = false;
    auto count = readers();
    for (size_t i = 0; i < graph_.nodes.size() && !changed; ++i) {
      Node& n = graph_.nodes[i];
      if (n.inputs.empty()) continue;
      // Add(bias, x) as PyTorch writes it: the same as Add(x, bias).
      if (n.op == "Add" && n.inputs.size() == 2 && constants_.count(n.inputs[0]) && !constants_.count(n.inputs[1]))
        std::swap(n.inputs[0], n.inputs[1]);
      Node* p = producer_of(n.inputs[0]);
      if (!p || count[n.inputs[0]] != 1) continue;
      const bool layer = p->op == "Dense" || p->op == "Conv2D";
      // Dense (no bias) + Add of a constant [U] (or [1, U]): the bias.
      if (n.op == "Add" && p->op == "Dense" && p->inputs.size() == 2 && n.inputs.size() == 2 &&
          p->attr_string("activation", "none") == "none") {
        auto c = constants_.find(n.inputs[1]);
        const int64_t units = info_of(p->inputs[1]).shape[0];
        if (c != constants_.end() && c->second.dtype() == DType::F32 && c->second.numel() == units &&
            (c->second.rank() == 1 || (c->second.rank() == 2 && c->second.shape()[0] == 1))) {
          Tensor bias = c->second.clone();
          bias.reshape({units});
          p->inputs.push_back(constant_value(std::move(bias), p->name + ".bias"));
          p->outputs[0] = n.outputs[0];
          graph_.nodes.erase(graph_.nodes.begin() + static_cast<std::ptrdiff_t>(i));
          changed = true;
        }
        continue;
      }
      if (n.op == "Relu" && layer && p->attr_string("activation", "none") == "none") {
        p->attributes["activation"] = "relu";
        p->outputs[0] = n.outputs[0];
        graph_.nodes.erase(graph_.nodes.begin() + static_cast<std::ptrdiff_t>(i));
        changed = true;
      }
    }
  }
  fuse_qdq();
  drop_unread();
  for (const auto& n : graph_.nodes)
    for (const auto& in : n.inputs) {
      auto c = constants_.find(in);
      if (c != constants_.end()) graph_.initializers[in] = c->second;
    }
}

}  // namespace onnx_io

Graph import_onnx_bytes(std::string_view bytes, const std::string& source, const std::string& folder, const OnnxImportOptions& options) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error(ErrorKind::Format, source + ": the file is larger than 2 GiB (keep the weights in external data files)");
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw Error(ErrorKind::Format, source + ": not an ONNX model (the protobuf ModelProto does not parse: truncated or not ONNX)");
  if (!model.has_graph()) throw Error(ErrorKind::Format, source + ": the ModelProto has no graph");
  return onnx_io::Importer(model, source, folder, options).run();
}

Graph import_onnx(const std::string& path, const OnnxImportOptions& options) {
  const std::string bytes = files::read_file(path);
  std::string folder = std::filesystem::path(path).parent_path().string();
  if (folder.empty()) folder = ".";
  return import_onnx_bytes(bytes, path, folder, options);
}

Tensor read_onnx_tensor(const std::string& path, std::string* name) {
  const std::string bytes = files::read_file(path);
  onnx::TensorProto proto;
  if (!proto.ParseFromString(bytes)) throw Error(ErrorKind::Format, path + ": not a serialized ONNX TensorProto");
  if (name) *name = proto.name();
  std::string folder = std::filesystem::path(path).parent_path().string();
  return onnx_io::tensor_from_proto(proto, path, folder.empty() ? "." : folder);
}

}  // namespace lowbit
