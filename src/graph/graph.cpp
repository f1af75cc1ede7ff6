#include "lowbit/graph.h"

#include <cstdio>
#include <set>

#include "lowbit/ops.h"

namespace lowbit {

namespace {

[[noreturn]] void wrong_kind(Attribute::Kind have, const char* want) {
  throw Error(ErrorKind::Format, std::string("attribute is ") + to_string(have) + ", expected " + want);
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string number(double v) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", v);
  return buffer;
}

template <typename T, typename F>
std::string list(const std::vector<T>& values, F text) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + text(values[i]);
  return out + "]";
}

}  // namespace

const char* to_string(Attribute::Kind kind) {
  switch (kind) {
    case Attribute::Kind::Int: return "an integer";
    case Attribute::Kind::Float: return "a float";
    case Attribute::Kind::String: return "a string";
    case Attribute::Kind::Ints: return "a list of integers";
    case Attribute::Kind::Floats: return "a list of floats";
    case Attribute::Kind::Strings: return "a list of strings";
  }
  return "?";
}

int64_t Attribute::as_int() const {
  if (!is_int()) wrong_kind(kind(), "an integer");
  return std::get<int64_t>(value_);
}

double Attribute::as_float() const {
  if (is_int()) return static_cast<double>(std::get<int64_t>(value_));
  if (kind() != Kind::Float) wrong_kind(kind(), "a number");
  return std::get<double>(value_);
}

const std::string& Attribute::as_string() const {
  if (!is_string()) wrong_kind(kind(), "a string");
  return std::get<std::string>(value_);
}

const std::vector<int64_t>& Attribute::as_ints() const {
  if (!is_ints()) wrong_kind(kind(), "a list of integers");
  return std::get<std::vector<int64_t>>(value_);
}

std::vector<double> Attribute::as_floats() const {
  if (is_ints()) {
    const auto& v = std::get<std::vector<int64_t>>(value_);
    return {v.begin(), v.end()};
  }
  if (kind() != Kind::Floats) wrong_kind(kind(), "a list of numbers");
  return std::get<std::vector<double>>(value_);
}

const std::vector<std::string>& Attribute::as_strings() const {
  if (kind() != Kind::Strings) wrong_kind(kind(), "a list of strings");
  return std::get<std::vector<std::string>>(value_);
}

std::string Attribute::to_string() const {
  switch (kind()) {
    case Kind::Int: return std::to_string(std::get<int64_t>(value_));
    case Kind::Float: return number(std::get<double>(value_));
    case Kind::String: return quoted(std::get<std::string>(value_));
    case Kind::Ints: return list(std::get<std::vector<int64_t>>(value_), [](int64_t v) { return std::to_string(v); });
    case Kind::Floats: return list(std::get<std::vector<double>>(value_), number);
    case Kind::Strings: return list(std::get<std::vector<std::string>>(value_), quoted);
  }
  return "";
}

namespace {

// Reads attribute `key` of `node` with `get`, naming the node and the attribute when it fails.
template <typename F>
auto read_attribute(const Node& node, const Attribute& a, const std::string& key, F get) {
  try {
    return get(a);
  } catch (const Error& e) {
    throw Error(ErrorKind::Format, "node '" + node.name + "': attribute '" + key + "' " +
                                       std::string(e.what()).substr(std::string("attribute ").size()));
  }
}

}  // namespace

const Attribute& Node::attr(const std::string& key) const {
  auto it = attributes.find(key);
  if (it == attributes.end())
    throw Error(ErrorKind::Format, "node '" + name + "' (" + op + "): attribute '" + key + "' is required");
  return it->second;
}

int64_t Node::attr_int(const std::string& key, int64_t fallback) const {
  auto it = attributes.find(key);
  if (it == attributes.end()) return fallback;
  return read_attribute(*this, it->second, key, [](const Attribute& a) { return a.as_int(); });
}

double Node::attr_float(const std::string& key, double fallback) const {
  auto it = attributes.find(key);
  if (it == attributes.end()) return fallback;
  return read_attribute(*this, it->second, key, [](const Attribute& a) { return a.as_float(); });
}

std::string Node::attr_string(const std::string& key, const std::string& fallback) const {
  auto it = attributes.find(key);
  if (it == attributes.end()) return fallback;
  return read_attribute(*this, it->second, key, [](const Attribute& a) { return a.as_string(); });
}

std::vector<int64_t> Node::attr_ints(const std::string& key, std::vector<int64_t> fallback) const {
  auto it = attributes.find(key);
  if (it == attributes.end()) return fallback;
  return read_attribute(*this, it->second, key, [](const Attribute& a) { return a.as_ints(); });
}

Node& Graph::add_node(Node node) {
  nodes.push_back(std::move(node));
  return nodes.back();
}

int Graph::producer(const std::string& value) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    for (const auto& out : nodes[i].outputs)
      if (out == value) return static_cast<int>(i);
  return -1;
}

void Graph::validate() {
  auto fail = [](const std::string& message) { throw Error(ErrorKind::Format, message); };
  std::set<std::string> defined;
  std::set<std::string> node_names;
  for (const auto& in : inputs) {
    if (!defined.insert(in.name).second) fail("graph input '" + in.name + "' is defined twice");
    if (!in.symbols.empty() && in.symbols.size() != in.shape.size())
      fail("graph input '" + in.name + "' names " + std::to_string(in.symbols.size()) + " dimensions of " +
           std::to_string(in.shape.size()));
    for (size_t d = 0; d < in.symbols.size(); ++d)
      if (!in.symbols[d].empty() && in.shape[d] >= 0)
        fail("graph input '" + in.name + "' names its static dimension " + std::to_string(d) + " ('" + in.symbols[d] + "')");
    for (int64_t d : in.shape)
      if (d < -1) fail("graph input '" + in.name + "' has dimension " + std::to_string(d) + " (sizes are >= 0, or -1 for dynamic)");
  }
  for (const auto& [name, tensor] : initializers) {
    if (!tensor.defined()) fail("initializer '" + name + "' holds no data");
    if (!defined.insert(name).second) fail("initializer '" + name + "' has the name of a graph input");
  }
  std::map<std::string, int> producer_of;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& node = nodes[i];
    if (node.name.empty()) fail("node " + std::to_string(i) + " (" + node.op + ") has no name");
    if (!node_names.insert(node.name).second) fail("node name '" + node.name + "' is used twice");
    if (!has_op(node.op)) find_op(node.op);  // throws, listing the known ops
    if (node.outputs.empty()) fail("node '" + node.name + "' has no outputs");
    for (const auto& out : node.outputs) {
      if (defined.count(out) || !producer_of.emplace(out, static_cast<int>(i)).second)
        fail("value '" + out + "' (output of node '" + node.name + "') is defined more than once");
    }
  }
  // Kahn's algorithm, taking ready nodes in their original order so the result is stable.
  std::vector<int> order;
  std::vector<bool> placed(nodes.size(), false);
  std::set<std::string> available = defined;
  while (order.size() < nodes.size()) {
    bool progress = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (placed[i]) continue;
      bool ready = true;
      for (const auto& in : nodes[i].inputs) {
        if (available.count(in)) continue;
        if (!producer_of.count(in))
          fail("node '" + nodes[i].name + "' reads value '" + in + "', which nothing defines");
        ready = false;
      }
      if (!ready) continue;
      placed[i] = true;
      order.push_back(static_cast<int>(i));
      for (const auto& out : nodes[i].outputs) available.insert(out);
      progress = true;
    }
    if (!progress) {
      for (size_t i = 0; i < nodes.size(); ++i)
        if (!placed[i]) fail("the graph has a cycle through node '" + nodes[i].name + "'");
    }
  }
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  for (int i : order) sorted.push_back(std::move(nodes[i]));
  nodes = std::move(sorted);
  for (const auto& out : outputs)
    if (!available.count(out)) fail("graph output '" + out + "' is not produced by any node");
  infer_shapes();
}

std::map<std::string, ValueInfo> Graph::infer_shapes() const {
  std::map<std::string, ValueInfo> info;
  for (const auto& in : inputs) info[in.name] = in;
  for (const auto& [name, tensor] : initializers) info[name] = ValueInfo{name, tensor.dtype(), tensor.shape()};
  for (const auto& node : nodes) {
    std::vector<Shape> in_shapes;
    std::vector<DType> in_dtypes;
    for (const auto& in : node.inputs) {
      auto it = info.find(in);
      if (it == info.end())
        throw Error(ErrorKind::Format, "node '" + node.name + "' reads value '" + in + "' before it is defined");
      in_shapes.push_back(it->second.shape);
      in_dtypes.push_back(it->second.dtype);
    }
    const Op& op = find_op(node.op);
    std::vector<Shape> out_shapes = op.infer_shapes(node, in_shapes);
    std::vector<DType> out_dtypes = op.infer_dtypes(node, in_dtypes);
    if (out_shapes.size() != node.outputs.size())
      throw Error(ErrorKind::Format, "node '" + node.name + "' (" + node.op + ") declares " +
                                         std::to_string(node.outputs.size()) + " outputs, the op produces " +
                                         std::to_string(out_shapes.size()));
    for (size_t i = 0; i < out_shapes.size(); ++i)
      info[node.outputs[i]] = ValueInfo{node.outputs[i], out_dtypes.at(i), out_shapes[i]};
  }
  return info;
}

void Graph::check_inputs(std::span<const Tensor* const> tensors) const {
  auto fail = [](const std::string& m) { throw Error(ErrorKind::InvalidArgument, m); };
  if (tensors.size() != inputs.size())
    fail("the graph has " + std::to_string(inputs.size()) + " inputs, " + std::to_string(tensors.size()) + " given");
  // Runs on every forward: nothing is allocated unless an input is wrong or names a dimension.
  auto expected = [](const ValueInfo& in) { return std::string(name_of(in.dtype)) + to_string(in.shape); };
  std::map<std::string, std::pair<int64_t, std::string>> bound;  // symbol -> size, where it was bound
  for (size_t i = 0; i < inputs.size(); ++i) {
    const ValueInfo& in = inputs[i];
    const Tensor& t = *tensors[i];
    if (!t.defined()) fail("input '" + in.name + "' was not set (expected " + expected(in) + ")");
    if (t.dtype() != in.dtype)
      fail("input '" + in.name + "' is " + name_of(t.dtype()) + ", the model expects " + expected(in));
    if (t.rank() != static_cast<int>(in.shape.size()))
      fail("input '" + in.name + "' has shape " + to_string(t.shape()) + ", the model expects " + expected(in));
    for (size_t d = 0; d < in.shape.size(); ++d) {
      const int64_t size = t.shape()[d];
      if (in.shape[d] >= 0 && size != in.shape[d])
        fail("input '" + in.name + "' has shape " + to_string(t.shape()) + ", the model expects " + expected(in) +
             " (dimension " + std::to_string(d) + ")");
      if (in.shape[d] >= 0 || d >= in.symbols.size() || in.symbols[d].empty()) continue;
      const std::string& symbol = in.symbols[d];
      const std::string here = "input '" + in.name + "' dimension " + std::to_string(d);
      auto [it, first] = bound.emplace(symbol, std::make_pair(size, here));
      if (!first && it->second.first != size)
        fail(here + " ('" + symbol + "') is " + std::to_string(size) + " but " + it->second.second + " ('" + symbol +
             "') is " + std::to_string(it->second.first));
    }
  }
}

int64_t Graph::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, tensor] : initializers) count += tensor.numel();
  return count;
}

}  // namespace lowbit
