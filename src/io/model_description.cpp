// The JSON model description (docs/model-description.md) and the "784-64-32-10" shorthand.
#include <regex>
#include <set>

#include "io/file_util.h"
#include "lowbit/model_io.h"
#include "lowbit/random.h"
#include "lowbit/train.h"

namespace lowbit {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw Error(ErrorKind::Format, "model description: " + where + ": " + what);
}

void check_keys(const json& object, const std::string& where, const std::set<std::string>& allowed) {
  for (const auto& [key, value] : object.items())
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(where, "unknown field '" + key + "' (allowed: " + list + ")");
    }
}

template <typename T> T field(const json& object, const std::string& where, const char* key, T fallback) {
  auto it = object.find(key);
  if (it == object.end()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(where, std::string("field '") + key + "' has the wrong type (" + it->dump() + ")");
  }
}

}  // namespace

json parse_arch(const std::string& arch) {
  static const std::regex mlp(R"(\d+(-\d+)+)");
  if (std::regex_match(arch, mlp)) {
    std::vector<int64_t> sizes;
    size_t start = 0;
    while (start <= arch.size()) {
      size_t dash = arch.find('-', start);
      if (dash == std::string::npos) dash = arch.size();
      sizes.push_back(std::stoll(arch.substr(start, dash - start)));
      start = dash + 1;
    }
    json d = {{"name", "mlp-" + arch}, {"input", {{"size", sizes[0]}}}, {"layers", json::array({{{"type", "flatten"}}})}};
    for (size_t i = 1; i < sizes.size(); ++i) {
      json layer = {{"type", "dense"}, {"units", sizes[i]}};
      if (i + 1 < sizes.size()) layer["activation"] = "relu";
      d["layers"].push_back(layer);
    }
    d["layers"].push_back({{"type", "softmax"}});
    return d;
  }
  if (!io::file_exists(arch))
    throw Error(ErrorKind::InvalidArgument,
                "--arch '" + arch + "' is neither layer sizes like 784-64-32-10 nor an existing JSON file");
  try {
    return json::parse(io::read_file(arch));
  } catch (const json::parse_error& e) {
    throw Error(ErrorKind::Format, "'" + arch + "': not valid JSON (" + e.what() + ")");
  }
}

Graph build_model(const json& d, const Shape& sample_shape, int num_classes, uint64_t seed) {
  if (!d.is_object()) fail("top level", "expected a JSON object");
  check_keys(d, "top level", {"name", "input", "layers", "comment"});
  Graph g;
  g.name = field<std::string>(d, "top level", "name", "model");
  const json input = d.value("input", json::object());
  if (!input.is_object()) fail("input", "expected an object");
  check_keys(input, "input", {"name", "shape", "size", "scale"});
  const std::string input_name = field<std::string>(input, "input", "name", "image");
  Shape shape = field<Shape>(input, "input", "shape", sample_shape);
  if (shape != sample_shape)
    fail("input", "shape " + to_string(shape) + " does not match the data's samples " + to_string(sample_shape));
  if (input.contains("size") && field<int64_t>(input, "input", "size", 0) != element_count(sample_shape))
    fail("input", "size " + input.at("size").dump() + " does not match the data's samples " + to_string(sample_shape) +
                      " = " + std::to_string(element_count(sample_shape)) + " values");
  shape.insert(shape.begin(), -1);
  g.inputs.push_back({input_name, DType::F32, shape});
  g.metadata["input_scale"] = std::to_string(field<double>(input, "input", "scale", 1.0 / 255.0));

  const json& layers = d.contains("layers") ? d.at("layers") : json();
  if (!layers.is_array() || layers.empty()) fail("layers", "expected a non-empty array of layers");
  Rng rng(seed);
  std::map<std::string, int> type_counts;
  std::set<std::string> names = {input_name};
  std::string previous = input_name;
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& layer = layers[i];
    std::string where = "layers[" + std::to_string(i) + "]";
    if (!layer.is_object() || !layer.contains("type") || !layer.at("type").is_string())
      fail(where, "expected an object with a string field 'type'");
    const std::string type = layer.at("type").get<std::string>();
    where += " (" + type + ")";
    std::string name = field<std::string>(layer, where, "name", type + "_" + std::to_string(++type_counts[type]));
    if (!names.insert(name).second) fail(where, "name '" + name + "' is used twice");
    std::vector<std::string> inputs = field<std::vector<std::string>>(layer, where, "inputs", {previous});
    for (const auto& in : inputs)
      if (!names.count(in) || in == name) fail(where, "input '" + in + "' is not the input or an earlier layer");
    Node node{name, "", inputs, {name}};
    if (type == "flatten") {
      check_keys(layer, where, {"type", "name", "inputs"});
      node.op = "Flatten";
    } else if (type == "relu") {
      check_keys(layer, where, {"type", "name", "inputs"});
      node.op = "Relu";
    } else if (type == "softmax") {
      check_keys(layer, where, {"type", "name", "inputs"});
      node.op = "Softmax";
    } else if (type == "dense") {
      check_keys(layer, where, {"type", "name", "inputs", "units", "activation", "init", "bias"});
      const int64_t units = field<int64_t>(layer, where, "units", 0);
      if (units < 1) fail(where, "field 'units' must be a positive integer");
      const std::string activation = field<std::string>(layer, where, "activation", "none");
      if (activation != "none" && activation != "relu") fail(where, "field 'activation' must be \"none\" or \"relu\"");
      Init init;
      try {
        init = init_from_name(field<std::string>(layer, where, "init", "glorot_uniform"));
      } catch (const Error& e) {
        fail(where, e.what());
      }
      // The input width comes from shape inference over the layers built so far.
      Graph partial = g;
      partial.outputs = {inputs.at(0)};
      const Shape in_shape = partial.infer_shapes().at(inputs.at(0)).shape;
      if (in_shape.size() != 2) fail(where, "input " + to_string(in_shape) + " must be [batch, features]: add a flatten layer");
      const int64_t features = in_shape[1];
      Tensor weight(DType::F32, {units, features});
      initialize(weight, init, features, units, rng);
      node.op = "Dense";
      node.inputs.push_back(name + ".weight");
      g.initializers[name + ".weight"] = weight;
      if (field<bool>(layer, where, "bias", true)) {
        node.inputs.push_back(name + ".bias");
        g.initializers[name + ".bias"] = Tensor(DType::F32, {units});
      }
      node.attributes["activation"] = activation;
    } else {
      fail(where, "unknown layer type '" + type + "' (known: flatten, dense, relu, softmax)");
    }
    g.add_node(std::move(node));
    previous = name;
  }
  g.outputs = {previous};
  g.validate();
  const Shape out = g.infer_shapes().at(previous).shape;
  if (out.size() != 2 || out[1] != num_classes)
    fail("layers", "the last layer produces " + to_string(out) + " but the data has " + std::to_string(num_classes) +
                       " classes: expected [N, " + std::to_string(num_classes) + "]");
  return g;
}

}  // namespace lowbit
