// The ONNX importer's driver: reads the ModelProto, converts node by node (import_ops.cpp), folds
// constants, then fuses what the runtime runs as one layer and drops what no output needs.
#include "onnx/importer.h"

#include <algorithm>
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
                                            "Sub", "Mul", "Div", "Gelu"};
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

std::string Importer::fresh(const std::string& hint) {
  std::string name = hint;
  for (int k = 1; names_.count(name); ++k) name = hint + "_" + std::to_string(k);
  names_.insert(name);
  return name;
}

std::string Importer::fresh_node(const std::string& hint) {
  std::string name = hint;
  for (int k = 1; node_names_.count(name); ++k) name = hint + "_" + std::to_string(k);
  node_names_.insert(name);
  return name;
}

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

std::string Importer::emit(const std::string& op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
                           Attributes attributes, const std::string& suffix) {
  Node node{fresh_node(node_name_ + suffix), op_type, std::move(inputs), std::move(outputs), std::move(attributes)};
  const Op& op = find_op(op_type);
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
  if (!domain.empty() && domain != "ai.onnx")
    unsupported("domain '" + domain + "' is not supported (lowbit reads the default ONNX domain)");
  const auto& table = converters();
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
        if (!node.domain().empty() && node.domain() != "ai.onnx")
          throw Error(ErrorKind::Unsupported, "domain '" + node.domain() + "' is not supported (lowbit reads the default ONNX domain)");
        if (!converters().count(node.op_type())) throw Error(ErrorKind::Unsupported, "op " + node.op_type() + " is not supported");
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
    const bool is_input = std::any_of(graph_.inputs.begin(), graph_.inputs.end(), [&](const ValueInfo& v) { return v.name == value; });
    if (value != out.name() || constants_.count(value) || is_input) {
      // The output is another value (an alias, a constant or an input): a copy gives it its name.
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

// Joins what lowbit runs as one layer, then drops nodes no output needs and turns the constants
// that remaining nodes read into initializers.
void Importer::fuse_and_prune() {
  auto consumers = [&]() {
    std::map<std::string, int> count;
    for (const auto& n : graph_.nodes)
      for (const auto& in : n.inputs) ++count[in];
    for (const auto& out : graph_.outputs) count[out] += 1000;  // never fuse away a graph output
    return count;
  };
  auto producer_of = [&](const std::string& value) -> Node* {
    for (auto& n : graph_.nodes)
      if (std::find(n.outputs.begin(), n.outputs.end(), value) != n.outputs.end()) return &n;
    return nullptr;
  };
  bool changed = true;
  while (changed) {
    changed = false;
    auto count = consumers();
    for (size_t i = 0; i < graph_.nodes.size() && !changed; ++i) {
      Node& n = graph_.nodes[i];
      if (n.inputs.empty()) continue;
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
  // Drop nodes whose outputs nothing reads (e.g. Shape nodes whose result was followed statically).
  changed = true;
  while (changed) {
    changed = false;
    auto count = consumers();
    for (size_t i = graph_.nodes.size(); i-- > 0;) {
      const Node& n = graph_.nodes[i];
      const bool used = std::any_of(n.outputs.begin(), n.outputs.end(), [&](const std::string& o) { return count[o] > 0; });
      if (!used) {
        graph_.nodes.erase(graph_.nodes.begin() + static_cast<std::ptrdiff_t>(i));
        changed = true;
      }
    }
  }
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
