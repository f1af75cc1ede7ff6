// The JSON model description (docs/model-description.md) and the "784-64-32-10" shorthand.
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <set>
#include <type_traits>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
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
  // Integers (and arrays of them) must be written as integers: nlohmann converts a float such as
  // 1e300 to int64 with undefined behaviour (found by the fuzzer).
  const auto integral = [](const json& v) { return v.is_number_integer(); };
  bool wrong = false;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) wrong = !integral(*it);
  if constexpr (std::is_same_v<T, Shape>) wrong = !it->is_array() || !std::all_of(it->begin(), it->end(), integral);
  if (wrong) fail(where, std::string("field '") + key + "' has the wrong type (" + it->dump() + "): expected integers");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail(where, std::string("field '") + key + "' has the wrong type (" + it->dump() + ")");
  }
}

// A field that is an int n (meaning [n, n]) or a list [a, b] of ints, each at least `minimum`.
std::array<int64_t, 2> int_pair(const json& object, const std::string& where, const char* key,
                                std::array<int64_t, 2> fallback, int64_t minimum) {
  auto it = object.find(key);
  if (it == object.end()) return fallback;
  std::array<int64_t, 2> v;
  if (it->is_number_integer()) {
    v = {it->get<int64_t>(), it->get<int64_t>()};
  } else if (it->is_array() && it->size() == 2 && (*it)[0].is_number_integer() && (*it)[1].is_number_integer()) {
    v = {(*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()};
  } else {
    fail(where, std::string("field '") + key + "' must be an integer or a list of two integers (got " + it->dump() + ")");
  }
  if (v[0] < minimum || v[1] < minimum)
    fail(where, std::string("field '") + key + "' must be at least " + std::to_string(minimum) + " (got " + it->dump() + ")");
  return v;
}

// The shape of `value` from shape inference over the layers built so far.
Shape shape_of(const Graph& g, const std::string& value) {
  Graph partial = g;
  partial.outputs = {value};
  return partial.infer_shapes().at(value).shape;
}

// ONNX pads [top, left, bottom, right] for a "padding" field: an int, [ph, pw], "valid" (none) or
// "same" (output = ceil(input / stride), the odd pixel at the bottom/right as in Keras and TF).
Shape pads_of(const json& layer, const std::string& where, const Shape& in, std::array<int64_t, 2> kernel,
             std::array<int64_t, 2> stride, std::array<int64_t, 2> dilation) {
  auto it = layer.find("padding");
  if (it != layer.end() && it->is_string()) {
    const std::string mode = it->get<std::string>();
    if (mode == "valid") return {0, 0, 0, 0};
    if (mode != "same") fail(where, "field 'padding' must be an integer, [ph, pw], \"same\" or \"valid\" (got " + it->dump() + ")");
    std::array<int64_t, 2> before{}, after{};
    for (int a = 0; a < 2; ++a) {
      const int64_t size = in[2 + a], out = (size + stride[a] - 1) / stride[a];
      const int64_t total = std::max<int64_t>((out - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 - size, 0);
      before[a] = total / 2, after[a] = total - total / 2;
    }
    return {before[0], before[1], after[0], after[1]};
  }
  const auto p = int_pair(layer, where, "padding", {0, 0}, 0);
  return {p[0], p[1], p[0], p[1]};
}

// The input of a spatial layer must be NCHW.
Shape spatial_input(const Graph& g, const std::string& where, const std::string& value) {
  const Shape in = shape_of(g, value);
  if (in.size() != 4)
    fail(where, "input " + to_string(in) + " must be [batch, channels, height, width]: add a reshape layer, e.g. "
                "{\"type\": \"reshape\", \"shape\": [1, 28, 28]}");
  return in;
}


// The bytes a model description may allocate for its parameters: LOWBIT_MAX_MODEL_BYTES, else
// 4 GiB (docs/model-description.md).
int64_t max_model_bytes() {
  if (const char* env = std::getenv("LOWBIT_MAX_MODEL_BYTES")) {
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && v > 0) return v;
    throw Error(ErrorKind::InvalidArgument, std::string("LOWBIT_MAX_MODEL_BYTES must be a positive number of bytes, got '") + env + "'");
  }
  return int64_t{4} << 30;
}

// An f32 parameter of `shape` for layer `where`: refused, before anything is allocated, when its
// size (or the model's parameters so far plus it) exceeds max_model_bytes().
Tensor parameter(const Graph& g, const std::string& where, const Shape& shape) {
  const int64_t limit = max_model_bytes();
  int64_t bytes = 4;
  for (int64_t d : shape) {
    if (d < 1) fail(where, "a parameter of shape " + to_string(shape) + " has a dimension below 1");
    if (bytes > limit / d) bytes = limit + 1;  // (no overflow: stays above the limit)
    else bytes *= d;
  }
  int64_t total = bytes;
  for (const auto& [name, t] : g.initializers) total += static_cast<int64_t>(t.nbytes());
  if (bytes > limit || total > limit)
    fail(where, "a parameter of shape " + to_string(shape) + " takes the model's parameters beyond " + std::to_string(limit) +
                    " bytes (LOWBIT_MAX_MODEL_BYTES sets the limit)");
  return Tensor(DType::F32, shape);
}

// A Dense node `name` from `input` (`features` wide) to `units`, its weight initialized by `init`
// and its bias (if any) zero, added to the graph's initializers.
Node dense_node(Graph& g, const std::string& name, const std::string& input, int64_t features, int64_t units, Init init,
                bool bias, Rng& rng) {
  Node node{name, "Dense", {input, name + ".weight"}, {name}};
  Tensor weight = parameter(g, name, {units, features});
  initialize(weight, init, features, units, rng);
  g.initializers[name + ".weight"] = weight;
  if (bias) {
    node.inputs.push_back(name + ".bias");
    g.initializers[name + ".bias"] = parameter(g, name, {units});
  }
  return node;
}

// LayerNormalization over the last axis (`width` values), scale 1 and shift 0 at the start.
Node layer_norm_node(Graph& g, const std::string& name, const std::string& input, int64_t width, double epsilon) {
  Tensor scale = parameter(g, name, {width});
  std::fill_n(scale.data<float>(), width, 1.0f);
  g.initializers[name + ".scale"] = scale;
  g.initializers[name + ".bias"] = parameter(g, name, {width});
  return Node{name, "LayerNormalization", {input, name + ".scale", name + ".bias"}, {name}, {{"axis", -1}, {"epsilon", epsilon}}};
}

// Multi-head self-attention over tokens [batch, tokens, width]: q, k, v projections
// (name.q, name.k, name.v), Attention (name.heads), the output projection (name). Returns the last node.
Node attention_nodes(Graph& g, const std::string& name, const std::string& input, int64_t width, int64_t heads, Rng& rng) {
  const Init init = init_from_name("glorot_uniform");
  for (const char* part : {".q", ".k", ".v"}) g.add_node(dense_node(g, name + part, input, width, width, init, true, rng));
  g.add_node(Node{name + ".heads", "Attention", {name + ".q", name + ".k", name + ".v"}, {name + ".heads"}, {{"num_heads", heads}}});
  return dense_node(g, name, name + ".heads", width, width, init, true, rng);
}

// The input of a token layer must be [batch, tokens, width].
Shape token_input(const Graph& g, const std::string& where, const std::string& value) {
  const Shape in = shape_of(g, value);
  if (in.size() != 3 || in[1] < 1 || in[2] < 1)
    fail(where, "input " + to_string(in) + " must be [batch, tokens, width]: start with a patches layer and a dense layer");
  return in;
}
}  // namespace

namespace {
// A description's JSON text, parsed; `source` (a file or "") names it in the error.
json parsed(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number beyond double's range
    throw Error(ErrorKind::Format, (source.empty() ? std::string("model description") : "'" + source + "'") +
                                       ": not valid JSON (" + e.what() + ")");
  }
}
}  // namespace

ModelDescription parse_arch(const std::string& arch) {
  static const std::regex mlp(R"(\d+(-\d+)+)");
  if (std::regex_match(arch, mlp)) {
    std::vector<int64_t> sizes;
    size_t start = 0;
    while (start <= arch.size()) {
      size_t dash = arch.find('-', start);
      if (dash == std::string::npos) dash = arch.size();
      const std::string size = arch.substr(start, dash - start);
      int64_t value = 0;
      const auto [end, ec] = std::from_chars(size.data(), size.data() + size.size(), value);
      if (ec != std::errc() || end != size.data() + size.size() || value < 1 || value > (int64_t{1} << 31))
        throw Error(ErrorKind::InvalidArgument, "architecture '" + arch + "': layer size " + size + " is not a number from 1 to 2^31");
      sizes.push_back(value);
      start = dash + 1;
    }
    json d = {{"name", "mlp-" + arch}, {"input", {{"size", sizes[0]}}}, {"layers", json::array({{{"type", "flatten"}}})}};
    for (size_t i = 1; i < sizes.size(); ++i) {
      json layer = {{"type", "dense"}, {"units", sizes[i]}};
      if (i + 1 < sizes.size()) layer["activation"] = "relu";
      d["layers"].push_back(layer);
    }
    d["layers"].push_back({{"type", "softmax"}});
    return {d.dump(), ""};
  }
  const size_t first = arch.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && arch[first] == '{') return {parsed(arch, "").dump(), ""};
  if (!files::file_exists(arch))
    throw Error(ErrorKind::InvalidArgument,
                "--arch '" + arch + "' is neither layer sizes like 784-64-32-10 nor an existing JSON file");
  return {parsed(files::read_file(arch), arch).dump(), arch};
}

namespace {
Graph build_described(const ModelDescription& description, const Shape& sample_shape, int num_classes, uint64_t seed,
                      DType sample_dtype) {
  const json d = parsed(description.json, description.source);
  if (!d.is_object()) fail("top level", "expected a JSON object");
  check_keys(d, "top level", {"name", "input", "layers", "comment"});
  Graph g;
  g.name = field<std::string>(d, "top level", "name", "model");
  const json input = d.value("input", json::object());
  if (!input.is_object()) fail("input", "expected an object");
  check_keys(input, "input", {"name", "shape", "size", "scale", "dtype"});
  const std::string input_name = field<std::string>(input, "input", "name", "image");
  Shape shape = field<Shape>(input, "input", "shape", sample_shape);
  if (shape != sample_shape)
    fail("input", "shape " + to_string(shape) + " does not match the data's samples " + to_string(sample_shape));
  if (input.contains("size") && field<int64_t>(input, "input", "size", 0) != element_count(sample_shape))
    fail("input", "size " + input.at("size").dump() + " does not match the data's samples " + to_string(sample_shape) +
                      " = " + std::to_string(element_count(sample_shape)) + " values");
  shape.insert(shape.begin(), -1);
  if (sample_dtype != DType::U8 && sample_dtype != DType::F32)
    fail("input", std::string("the data's samples are ") + name_of(sample_dtype) + "; expected u8 image bytes or f32 values");
  const std::string dtype = field<std::string>(input, "input", "dtype", sample_dtype == DType::F32 ? "f32" : "u8");
  if (dtype == "u8" && sample_dtype == DType::F32)
    fail("input", "field 'dtype' is \"u8\" (image bytes), but the data holds f32 values (use \"f32\")");
  // The scale as lowbit has always applied it: printed with six decimals, so 1/255 is 0.003922.
  const std::string scale_text = std::to_string(field<double>(input, "input", "scale", 1.0 / 255.0));
  const float scale = std::stof(scale_text);
  if (!(scale > 0.0f) || !std::isfinite(scale)) fail("input", "scale " + scale_text + " must be positive");
  // What the layers read as "the input": the image bytes scaled in the graph (dtype "u8", the
  // default: a DequantizeLinear with zero point 0, so a model file computes the whole function
  // from the bytes), or floats that the caller scales (dtype "f32", metadata input_scale).
  std::string network_input = input_name;
  if (dtype == "u8") {
    g.inputs.push_back({input_name, DType::U8, shape});
    network_input = input_name + "_scaled";
    g.add_node({input_name + "_scale", "Constant", {}, {input_name + "_scale"}, {{"value_float", static_cast<double>(scale)}}});
    g.add_node({network_input, "DequantizeLinear", {input_name, input_name + "_scale"}, {network_input}});
  } else if (dtype == "f32") {
    g.inputs.push_back({input_name, DType::F32, shape});
    g.metadata["input_scale"] = scale_text;
  } else {
    fail("input", "field 'dtype' must be \"u8\" (image bytes, scaled in the graph) or \"f32\", got \"" + dtype + "\"");
  }

  const json& layers = d.contains("layers") ? d.at("layers") : json();
  if (!layers.is_array() || layers.empty()) fail("layers", "expected a non-empty array of layers");
  Rng rng(seed);
  std::map<std::string, int> type_counts;
  std::set<std::string> names = {input_name, input_name + "_scale", network_input};  // taken
  std::set<std::string> readable = {input_name, network_input};  // what a layer may name as its input
  std::string previous = network_input;
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
    for (auto& in : inputs) {
      if (!readable.count(in)) fail(where, "input '" + in + "' is not the input or an earlier layer");
      if (in == input_name) in = network_input;
    }
    readable.insert(name);
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
      // The input width comes from shape inference over the layers built so far; a dense layer
      // maps the last axis ([batch, features], or [batch, tokens, features] in a transformer).
      const Shape in_shape = shape_of(g, inputs.at(0));
      if (in_shape.size() < 2 || in_shape.back() < 1)
        fail(where, "input " + to_string(in_shape) + " must be [batch, features] or [batch, ..., features]");
      node = dense_node(g, name, inputs.at(0), in_shape.back(), units, init, field<bool>(layer, where, "bias", true), rng);
      node.attributes["activation"] = activation;
    } else if (type == "reshape") {
      check_keys(layer, where, {"type", "name", "inputs", "shape"});
      if (!layer.contains("shape")) fail(where, "field 'shape' (the shape of one sample, e.g. [1, 28, 28]) is required");
      node.op = "Reshape";
      node.attributes["shape"] = field<Shape>(layer, where, "shape", {});
    } else if (type == "conv2d") {
      check_keys(layer, where,
                 {"type", "name", "inputs", "filters", "kernel", "stride", "padding", "dilation", "groups", "bias",
                  "activation", "init"});
      const int64_t filters = field<int64_t>(layer, where, "filters", 0);
      if (filters < 1) fail(where, "field 'filters' must be a positive integer");
      if (!layer.contains("kernel")) fail(where, "field 'kernel' (an integer or [kh, kw]) is required");
      const auto kernel = int_pair(layer, where, "kernel", {1, 1}, 1);
      const auto stride = int_pair(layer, where, "stride", {1, 1}, 1);
      const auto dilation = int_pair(layer, where, "dilation", {1, 1}, 1);
      const int64_t groups = field<int64_t>(layer, where, "groups", 1);
      const std::string activation = field<std::string>(layer, where, "activation", "none");
      if (activation != "none" && activation != "relu") fail(where, "field 'activation' must be \"none\" or \"relu\"");
      Init init;
      try {
        init = init_from_name(field<std::string>(layer, where, "init", "he_uniform"));
      } catch (const Error& e) {
        fail(where, e.what());
      }
      const Shape in_shape = spatial_input(g, where, inputs.at(0));
      const int64_t channels = in_shape[1];
      if (groups < 1 || channels % groups || filters % groups)
        fail(where, "field 'groups' (" + std::to_string(groups) + ") must be positive and divide the input channels (" +
                        std::to_string(channels) + ") and 'filters' (" + std::to_string(filters) + ")");
      Tensor weight = parameter(g, where, {filters, channels / groups, kernel[0], kernel[1]});
      // Receptive field times the channels feeding one output (fan_in) or fed by one input (fan_out).
      initialize(weight, init, channels / groups * kernel[0] * kernel[1], filters * kernel[0] * kernel[1], rng);
      node.op = "Conv2D";
      node.inputs.push_back(name + ".weight");
      g.initializers[name + ".weight"] = weight;
      if (field<bool>(layer, where, "bias", true)) {
        node.inputs.push_back(name + ".bias");
        g.initializers[name + ".bias"] = parameter(g, where, {filters});
      }
      node.attributes["strides"] = Shape{stride[0], stride[1]};
      node.attributes["pads"] = pads_of(layer, where, in_shape, kernel, stride, dilation);
      node.attributes["dilations"] = Shape{dilation[0], dilation[1]};
      node.attributes["group"] = groups;
      node.attributes["activation"] = activation;
    } else if (type == "maxpool2d" || type == "avgpool2d") {
      const bool average = type == "avgpool2d";
      if (average)
        check_keys(layer, where, {"type", "name", "inputs", "kernel", "stride", "padding", "count_include_pad"});
      else
        check_keys(layer, where, {"type", "name", "inputs", "kernel", "stride", "padding"});
      if (!layer.contains("kernel")) fail(where, "field 'kernel' (an integer or [kh, kw]) is required");
      const auto kernel = int_pair(layer, where, "kernel", {1, 1}, 1);
      const auto stride = int_pair(layer, where, "stride", kernel, 1);
      const Shape in_shape = spatial_input(g, where, inputs.at(0));
      node.op = average ? "AveragePool2D" : "MaxPool2D";
      node.attributes["kernel_shape"] = Shape{kernel[0], kernel[1]};
      node.attributes["strides"] = Shape{stride[0], stride[1]};
      node.attributes["pads"] = pads_of(layer, where, in_shape, kernel, stride, {1, 1});
      if (average) node.attributes["count_include_pad"] = field<bool>(layer, where, "count_include_pad", false) ? 1 : 0;
    } else if (type == "globalavgpool") {
      check_keys(layer, where, {"type", "name", "inputs"});
      spatial_input(g, where, inputs.at(0));
      node.op = "GlobalAveragePool";
    } else if (type == "batchnorm") {
      check_keys(layer, where, {"type", "name", "inputs", "momentum", "epsilon"});
      const double momentum = field<double>(layer, where, "momentum", 0.9);
      const double epsilon = field<double>(layer, where, "epsilon", 1e-5);
      if (!(momentum >= 0.0 && momentum <= 1.0)) fail(where, "field 'momentum' must be in [0, 1]");
      if (!(epsilon > 0.0)) fail(where, "field 'epsilon' must be positive");
      const Shape in_shape = shape_of(g, inputs.at(0));
      if (in_shape.size() != 2 && in_shape.size() != 4)
        fail(where, "input " + to_string(in_shape) + " must be [batch, channels] or [batch, channels, height, width]");
      const int64_t channels = in_shape[1];
      // Identity at the start: scale 1, shift 0, running mean 0 and variance 1 (as PyTorch).
      Tensor scale = parameter(g, where, {channels}), running_var = parameter(g, where, {channels});
      std::fill_n(scale.data<float>(), channels, 1.0f);
      std::fill_n(running_var.data<float>(), channels, 1.0f);
      node.op = "BatchNormalization";
      for (const char* suffix : {".scale", ".bias", ".running_mean", ".running_var"}) node.inputs.push_back(name + suffix);
      g.initializers[name + ".scale"] = scale;
      g.initializers[name + ".bias"] = parameter(g, where, {channels});
      g.initializers[name + ".running_mean"] = parameter(g, where, {channels});
      g.initializers[name + ".running_var"] = running_var;
      node.attributes["momentum"] = momentum;
      node.attributes["epsilon"] = epsilon;
    } else if (type == "dropout") {
      check_keys(layer, where, {"type", "name", "inputs", "rate"});
      const double rate = field<double>(layer, where, "rate", 0.5);
      if (!(rate >= 0.0 && rate < 1.0)) fail(where, "field 'rate' must be in [0, 1)");
      node.op = "Dropout";
      node.outputs.push_back(name + ".mask");  // kept for the backward pass
      node.attributes["ratio"] = rate;
    } else if (type == "add") {
      check_keys(layer, where, {"type", "name", "inputs"});
      if (inputs.size() != 2) fail(where, "field 'inputs' must name the two layers to add, e.g. [\"conv2d_2\", \"relu_1\"]");
      node.op = "Add";
    } else if (type == "patches") {
      // [N, C, H, W] -> [N, (H / ph) (W / pw), C ph pw]: non-overlapping patches as tokens, row by row.
      check_keys(layer, where, {"type", "name", "inputs", "size"});
      if (!layer.contains("size")) fail(where, "field 'size' (an integer or [ph, pw]) is required");
      const auto size = int_pair(layer, where, "size", {1, 1}, 1);
      const Shape in_shape = spatial_input(g, where, inputs.at(0));
      if (in_shape[2] % size[0] || in_shape[3] % size[1])
        fail(where, "patches of " + std::to_string(size[0]) + "x" + std::to_string(size[1]) + " do not tile the input " + to_string(in_shape));
      const int64_t c = in_shape[1], gh = in_shape[2] / size[0], gw = in_shape[3] / size[1];
      g.add_node(Node{name + ".grid", "Reshape", {inputs.at(0)}, {name + ".grid"}, {{"shape", Shape{c, gh, size[0], gw, size[1]}}}});
      g.add_node(Node{name + ".order", "Transpose", {name + ".grid"}, {name + ".order"}, {{"perm", Shape{0, 2, 4, 1, 3, 5}}}});
      node.op = "Reshape";
      node.inputs = {name + ".order"};
      node.attributes["shape"] = Shape{gh * gw, c * size[0] * size[1]};
    } else if (type == "position_embedding") {
      // A learned [tokens, width] added to every sample (initialized N(0, 0.02^2), as ViT).
      check_keys(layer, where, {"type", "name", "inputs"});
      const Shape in_shape = token_input(g, where, inputs.at(0));
      Tensor table = parameter(g, where, {in_shape[1], in_shape[2]});
      for (int64_t k = 0; k < table.numel(); ++k) table.data<float>()[k] = 0.02f * rng.normal();
      g.initializers[name + ".weight"] = table;
      node.op = "Add";
      node.inputs.push_back(name + ".weight");
    } else if (type == "layernorm") {
      check_keys(layer, where, {"type", "name", "inputs", "epsilon"});
      const double epsilon = field<double>(layer, where, "epsilon", 1e-5);
      if (!(epsilon > 0.0)) fail(where, "field 'epsilon' must be positive");
      const Shape in_shape = shape_of(g, inputs.at(0));
      if (in_shape.size() < 2 || in_shape.back() < 1) fail(where, "input " + to_string(in_shape) + " must be [batch, ..., features]");
      node = layer_norm_node(g, name, inputs.at(0), in_shape.back(), epsilon);
    } else if (type == "gelu") {
      check_keys(layer, where, {"type", "name", "inputs", "approximate"});
      const std::string approximate = field<std::string>(layer, where, "approximate", "none");
      if (approximate != "none" && approximate != "tanh") fail(where, "field 'approximate' must be \"none\" or \"tanh\"");
      node.op = "Gelu";
      node.attributes["approximate"] = approximate;
    } else if (type == "attention" || type == "transformer_block") {
      const bool block = type == "transformer_block";
      if (block)
        check_keys(layer, where, {"type", "name", "inputs", "heads", "mlp", "epsilon", "approximate"});
      else
        check_keys(layer, where, {"type", "name", "inputs", "heads"});
      const Shape in_shape = token_input(g, where, inputs.at(0));
      const int64_t width = in_shape[2], heads = field<int64_t>(layer, where, "heads", 0);
      if (heads < 1 || width % heads)
        fail(where, "field 'heads' must be a positive divisor of the width " + std::to_string(width) + " (got " + std::to_string(heads) + ")");
      if (!block) {
        node = attention_nodes(g, name, inputs.at(0), width, heads, rng);
      } else {
        // Pre-norm: x + attention(norm(x)), then that + mlp(norm(that)), the MLP dense-GELU-dense.
        const int64_t hidden = field<int64_t>(layer, where, "mlp", 4 * width);
        const double epsilon = field<double>(layer, where, "epsilon", 1e-5);
        const std::string approximate = field<std::string>(layer, where, "approximate", "none");
        if (hidden < 1) fail(where, "field 'mlp' (the hidden width of the MLP) must be a positive integer");
        if (!(epsilon > 0.0)) fail(where, "field 'epsilon' must be positive");
        if (approximate != "none" && approximate != "tanh") fail(where, "field 'approximate' must be \"none\" or \"tanh\"");
        const std::string x = inputs.at(0);
        const Init init = init_from_name("glorot_uniform");
        g.add_node(layer_norm_node(g, name + ".norm1", x, width, epsilon));
        g.add_node(attention_nodes(g, name + ".attention", name + ".norm1", width, heads, rng));
        g.add_node(Node{name + ".residual1", "Add", {x, name + ".attention"}, {name + ".residual1"}});
        g.add_node(layer_norm_node(g, name + ".norm2", name + ".residual1", width, epsilon));
        g.add_node(dense_node(g, name + ".mlp1", name + ".norm2", width, hidden, init, true, rng));
        g.add_node(Node{name + ".gelu", "Gelu", {name + ".mlp1"}, {name + ".gelu"}, {{"approximate", approximate}}});
        g.add_node(dense_node(g, name + ".mlp2", name + ".gelu", hidden, width, init, true, rng));
        node.op = "Add";
        node.inputs = {name + ".residual1", name + ".mlp2"};
      }
    } else if (type == "mean_pool") {
      // [N, tokens, width] -> [N, width]: the mean over the tokens.
      check_keys(layer, where, {"type", "name", "inputs"});
      token_input(g, where, inputs.at(0));
      node.op = "ReduceMean";
      node.attributes["axes"] = Shape{1};
      node.attributes["keepdims"] = 0;
    } else {
      fail(where, "unknown layer type '" + type +
                      "' (known: flatten, reshape, dense, conv2d, maxpool2d, avgpool2d, globalavgpool, batchnorm, "
                      "dropout, add, relu, softmax, patches, position_embedding, layernorm, gelu, attention, "
                      "transformer_block, mean_pool)");
    }
    g.add_node(std::move(node));
    previous = name;
  }
  g.outputs = {previous};
  g.validate();
  const Shape out = g.infer_shapes().at(previous).shape;
  if (out.size() != 2 || out[1] != num_classes)
    fail("layers", "the last layer produces " + to_string(out) + " but the data has " + std::to_string(num_classes) +
                       " classes: expected [N, " + std::to_string(num_classes) + "]" +
                       (out.size() > 2 ? " (add a flatten layer, or a mean_pool over tokens, before the classifier)" : ""));
  return g;
}
}  // namespace

Graph build_model(const ModelDescription& description, const Shape& sample_shape, int num_classes, uint64_t seed,
                  DType sample_dtype) {
  try {
    return build_described(description, sample_shape, num_classes, seed, sample_dtype);
  } catch (const json::exception& e) {  // a field of a type that no check above expected
    throw Error(ErrorKind::Format, (description.source.empty() ? std::string("model description") : "'" + description.source + "'") +
                                       ": " + e.what());
  }
}

}  // namespace lowbit
