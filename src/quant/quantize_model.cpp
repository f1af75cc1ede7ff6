// The quantization transform and its inverse; see include/lowbit/quantize.h and
// docs/design/quantization.md.
#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "graph/ops/integer_inputs.h"
#include "kernels/blockq.h"
#include "lowbit/ops.h"
#include "lowbit/quantize.h"

namespace lowbit {

const char* name_of(QuantMode mode) noexcept {
  switch (mode) {
    case QuantMode::Full: return "full";
    case QuantMode::Partial: return "partial";
    case QuantMode::Dynamic: return "dynamic";
  }
  return "?";
}

QuantMode quant_mode_from_name(const std::string& name) {
  for (auto m : {QuantMode::Full, QuantMode::Partial, QuantMode::Dynamic})
    if (name == name_of(m)) return m;
  throw Error(ErrorKind::InvalidArgument, "unknown quantization mode '" + name + "' (expected full, partial or dynamic)");
}

LayerRule QuantPlan::rule_for(const std::string& layer) const {
  auto it = layers.find(layer);
  if (it != layers.end()) return it->second;
  LayerRule r = defaults;
  if (mode == QuantMode::Partial) r.quantize = false;
  return r;
}

namespace {
using json = nlohmann::json;

json rule_json(const LayerRule& r) {
  json j = {{"quantize", r.quantize}, {"weight_bits", r.weight_bits},
            {"granularity", r.per_channel ? "per_channel" : "per_tensor"}, {"weight_scheme", name_of(r.weight_scheme)},
            {"calibration", r.calibration}};
  if (r.rounding != "nearest") j["rounding"] = r.rounding;  // written when not the default
  if (r.act_order) j["act_order"] = true;
  if (r.group_size != 0) j["group_size"] = r.group_size;
  return j;
}

LayerRule rule_from_json(const json& j, const LayerRule& base, const std::string& where) {
  auto fail = [&](const std::string& m) { throw Error(ErrorKind::Format, where + ": " + m); };
  if (!j.is_object()) fail("expected an object");
  LayerRule r = base;
  for (const auto& [key, v] : j.items()) {
    if (key == "quantize") {
      if (!v.is_boolean()) fail("'quantize' must be true or false");
      r.quantize = v.get<bool>();
    } else if (key == "weight_bits") {
      if (!v.is_number_integer()) fail("'weight_bits' must be an integer");
      r.weight_bits = v.get<int>();
      if (r.weight_bits < 2 || r.weight_bits > 8) fail("'weight_bits' must be 2..8, got " + v.dump());
    } else if (key == "granularity") {
      if (v != "per_channel" && v != "per_tensor") fail("'granularity' must be \"per_channel\" or \"per_tensor\"");
      r.per_channel = v == "per_channel";
    } else if (key == "weight_scheme") {
      if (v != "symmetric" && v != "affine") fail("'weight_scheme' must be \"symmetric\" or \"affine\"");
      r.weight_scheme = v == "symmetric" ? QScheme::Symmetric : QScheme::Affine;
    } else if (key == "calibration") {
      if (!v.is_string()) fail("'calibration' must be a string");
      try {
        calibration_method_from_name(v.get<std::string>());
      } catch (const Error& e) {
        fail(e.what());
      }
      r.calibration = v.get<std::string>();
    } else if (key == "rounding") {
      if (v != "nearest" && v != "gptq") fail("'rounding' must be \"nearest\" or \"gptq\"");
      r.rounding = v.get<std::string>();
    } else if (key == "act_order") {
      if (!v.is_boolean()) fail("'act_order' must be true or false");
      r.act_order = v.get<bool>();
    } else if (key == "group_size") {
      if (!v.is_number_integer() || (v != 32 && v != 64 && v != 128))
        fail("'group_size' must be 32, 64 or 128 (leave it out for whole rows), got " + v.dump());
      r.group_size = v.get<int>();
    } else {
      fail("unknown field '" + key + "' (allowed: quantize, weight_bits, granularity, weight_scheme, calibration, rounding, act_order, group_size)");
    }
  }
  if (r.group_size != 0 && (r.weight_bits < 2 || r.weight_bits > 4))
    fail("block weights ('group_size') have 2, 3 or 4 bits, got 'weight_bits' " + std::to_string(r.weight_bits));
  if (r.group_size != 0 && !r.per_channel) fail("'group_size' needs granularity \"per_channel\" (blocks of each row)");
  return r;
}
json plan_json(const QuantPlan& plan) {
  nlohmann::ordered_json j;
  j["format"] = "lowbit-quantization-plan";
  j["version"] = 1;
  j["mode"] = name_of(plan.mode);
  j["defaults"] = rule_json(plan.defaults);
  j["layers"] = json::object();
  for (const auto& [name, r] : plan.layers) j["layers"][name] = rule_json(r);
  if (plan.mode == QuantMode::Dynamic) j["dynamic_granularity"] = plan.dynamic_granularity;
  if (plan.activation_scheme == QScheme::Symmetric) j["activation_scheme"] = "symmetric";  // written when not the default
  return j;  // keys sorted (json, not ordered_json): plan files and metadata list them by name
}

QuantPlan plan_from_json(const json& j, const std::string& source) {
  auto fail = [&](const std::string& m) { throw Error(ErrorKind::Format, "'" + source + "': " + m); };
  if (!j.is_object() || j.value("format", "") != "lowbit-quantization-plan")
    fail("field 'format' must be \"lowbit-quantization-plan\"");
  if (!j.contains("version") || j["version"] != 1) fail("field 'version' must be 1");
  QuantPlan p;
  for (const auto& [key, v] : j.items()) {
    if (key == "format" || key == "version" || key == "comment" || key == "search") continue;
    if (key == "mode") {
      if (!v.is_string()) fail("field 'mode' must be a string");
      try {
        p.mode = quant_mode_from_name(v.get<std::string>());
      } catch (const Error& e) {
        fail(std::string("field 'mode': ") + e.what());
      }
    } else if (key == "defaults") {
      p.defaults = rule_from_json(v, p.defaults, "'" + source + "': defaults");
    } else if (key == "layers") {
      if (!v.is_object()) fail("field 'layers' must be an object of per-layer rules");
    } else if (key == "activation_scheme") {
      if (v != "affine" && v != "symmetric") fail("field 'activation_scheme' must be \"affine\" or \"symmetric\"");
      p.activation_scheme = v == "symmetric" ? QScheme::Symmetric : QScheme::Affine;
    } else if (key == "dynamic_granularity") {
      if (v != "row" && v != "tensor") fail("field 'dynamic_granularity' must be \"row\" or \"tensor\"");
      p.dynamic_granularity = v.get<std::string>();
    } else {
      fail("unknown field '" + key + "'");
    }
  }
  if (j.contains("layers"))
    for (const auto& [name, v] : j["layers"].items())
      p.layers[name] = rule_from_json(v, p.defaults, "'" + source + "': layers." + name);
  return p;
}
}  // namespace

std::string QuantPlan::to_json() const { return plan_json(*this).dump(); }

QuantPlan QuantPlan::from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number beyond double's range
    throw Error(ErrorKind::Format, "'" + source + "': not valid JSON (" + e.what() + ")");
  }
  try {
    return plan_from_json(j, source);
  } catch (const json::exception& e) {  // a field of the wrong type that a check above let through
    throw Error(ErrorKind::Format, "'" + source + "': " + e.what());
  }
}

void save_plan(const QuantPlan& plan, const std::string& path) { files::write_file_atomically(path, plan_json(plan).dump(2) + "\n"); }

QuantPlan load_plan(const std::string& path) { return QuantPlan::from_json(files::read_file(path), path); }

std::vector<std::string> quantizable_layers(const Graph& model) {
  std::vector<std::string> names;
  for (const auto& node : model.nodes)
    if (traits_of(node).is_quantizable()) names.push_back(node.name);
  return names;
}

std::vector<std::string> select_layers(const Graph& model, const std::string& patterns) {
  const auto layers = quantizable_layers(model);
  std::vector<std::string> selected;
  size_t start = 0;
  while (start <= patterns.size()) {
    size_t comma = patterns.find(',', start);
    if (comma == std::string::npos) comma = patterns.size();
    const std::string pattern = patterns.substr(start, comma - start);
    start = comma + 1;
    if (pattern.empty()) continue;
    bool matched = false;
    for (const auto& l : layers)
      if (fnmatch(pattern.c_str(), l.c_str(), 0) == 0) {
        matched = true;
        if (std::find(selected.begin(), selected.end(), l) == selected.end()) selected.push_back(l);
      }
    if (!matched) {
      std::string known;
      for (const auto& l : layers) known += (known.empty() ? "" : ", ") + l;
      throw Error(ErrorKind::InvalidArgument, "layer pattern '" + pattern + "' matches no quantizable layer (layers: " + known + ")");
    }
  }
  return selected;
}

bool quantizes(const Node& node, const QuantPlan& plan) {
  const OpTraits& traits = traits_of(node);
  const LayerRule rule = plan.rule_for(node.name);
  if (!traits.is_quantizable() || !rule.quantize) return false;
  return traits.has_weights() || (plan.mode != QuantMode::Dynamic && rule.group_size == 0);
}

bool is_quantized(const Graph& model) {
  for (const auto& node : model.nodes)
    if (traits_of(node).is_integer_layer() || traits_of(node).boundary == OpTraits::Boundary::Quantize) return true;
  return false;
}

namespace {

// The window attributes a convolution keeps through quantization and back.
void copy_window_attributes(const Node& from, Node& to) {
  for (const char* key : {"strides", "pads", "dilations", "group"})
    if (from.attributes.contains(key)) to.attributes[key] = from.attributes.at(key);
}

bool is_dynamic_layer(const Node& node) { return traits_of(node).dynamic; }
// An integer layer made from a convolution (its weights are a kernel, its geometry attributes).
bool is_conv_layer(const Node& node) {
  const OpTraits& t = traits_of(node);
  return (t.is_integer_layer() ? find_op(t.float_op).traits() : t).quantizable == OpTraits::Quantizable::ConvWeights;
}

QuantParams activation_params_for(const ValueRange& r, QScheme scheme) { return choose_params(r.min, r.max, {8, scheme}); }

class Transform {
 public:
  Transform(const Graph& model, const QuantPlan& plan, const std::map<std::string, Calibration>& ranges,
            const FixedQuantParams& fixed)
      : model_(model), plan_(plan), ranges_(ranges), fixed_(fixed) {}

  Graph run() {
    out_.name = model_.name;
    out_.inputs = model_.inputs;
    out_.outputs = model_.outputs;
    out_.metadata = model_.metadata;
    const auto info = model_.infer_shapes();
    for (const auto& node : model_.nodes) {
      const OpTraits& traits = traits_of(node);
      if (traits.quantizable == OpTraits::Quantizable::Activations && quantizes(node, plan_))
        quantize_attention(node, traits);
      else if (traits.has_weights() && plan_.rule_for(node.name).group_size > 0 && plan_.rule_for(node.name).quantize)
        quantize_block_layer(node, traits);
      else if (traits.has_weights() && plan_.rule_for(node.name).quantize)
        traits.quantizable == OpTraits::Quantizable::ConvWeights ? quantize_conv(node, traits) : quantize_dense(node, traits);
      else if (traits.passes_quantized)
        pass_through(node);
      else if (traits.boundary == OpTraits::Boundary::Dequantize && info.at(node.inputs[0]).dtype == DType::U8)
        scale_bytes(node);
      else
        keep_float(node);
    }
    out_.metadata["quantization"] = plan_.to_json();
    out_.validate();
    return std::move(out_);
  }

 private:
  // 8-bit activation parameters of `value`: fixed in advance, or from the calibration ranges.
  QuantParams activation_params(const std::string& value, const std::string& method) const {
    auto f = fixed_.activations.find(value);
    if (f != fixed_.activations.end()) {
      const QuantParams& p = f->second;
      if (p.bits != 8 || !p.is_signed || p.per_channel())
        throw Error(ErrorKind::InvalidArgument, "fixed parameters of value '" + value + "' must be 8-bit signed per tensor");
      p.validate("value '" + value + "'");
      return p;
    }
    return activation_params_for(range(value, method), plan_.activation_scheme);
  }

  const ValueRange& range(const std::string& value, const std::string& method) const {
    auto c = ranges_.find(method);
    if (c == ranges_.end())
      throw Error(ErrorKind::InvalidArgument, "no '" + method + "' calibration ranges were given (needed by the plan)");
    auto r = c->second.ranges.find(value);
    if (r == c->second.ranges.end())
      throw Error(ErrorKind::InvalidArgument, "the calibration ranges have no entry for value '" + value +
                                                  "' (were they computed for this model?)");
    return r->second;
  }

  bool is_graph_output(const std::string& v) const {
    return std::find(model_.outputs.begin(), model_.outputs.end(), v) != model_.outputs.end();
  }

  // Does some consumer of `value` (looking through ops that pass s8 through: reshapes,
  // max-pooling) take integer input? `bytes`: value is scaled image bytes (see integer_reader).
  bool has_integer_consumer(const std::string& value, bool bytes = false) const {
    return !integer_reader(value, bytes).first.empty();
  }

  // The value through which an integer layer reads `value` (itself, or the output of ops that pass
  // s8 values on) and that layer's calibration method; "" if no integer layer reads it. In dynamic
  // mode only a layer reading scaled image bytes (`bytes`) is one: those are already 8-bit codes
  // on a known grid, so the layer takes them as they are instead of quantizing floats at run time.
  std::pair<std::string, std::string> integer_reader(const std::string& value, bool bytes = false) const {
    for (const auto& node : model_.nodes) {
      if (std::find(node.inputs.begin(), node.inputs.end(), value) == node.inputs.end()) continue;
      const OpTraits& traits = traits_of(node);
      if (traits.has_weights() && node.inputs[0] == value && plan_.rule_for(node.name).quantize &&
          plan_.rule_for(node.name).group_size == 0 && (plan_.mode != QuantMode::Dynamic || bytes))
        return {value, plan_.rule_for(node.name).calibration};
      if (traits.quantizable == OpTraits::Quantizable::Activations && quantizes(node, plan_)) {
        bool operand = false;  // q, k or v (not the mask)
        for (size_t i = 0; i < 3 && i < node.inputs.size(); ++i) operand = operand || node.inputs[i] == value;
        if (operand) return {value, plan_.rule_for(node.name).calibration};
      }
      if (traits.passes_quantized && !is_graph_output(node.outputs[0])) {
        auto reader = integer_reader(node.outputs[0], bytes);
        if (!reader.first.empty()) return reader;
      }
    }
    return {};
  }

  // An s8 value of the quantized graph: its parameters and the initializers that hold them
  // (a scalar scale and zero point, shared by every node that reads or writes the value).
  struct S8Value {
    QuantParams params;
    std::string scale, zero_point;
  };

  // Makes `value` an s8 value with parameters p: adds its scale and zero-point initializers.
  const S8Value& add_s8_value(const std::string& value, const QuantParams& p) {
    S8Value v{p, value + "_scale", value + "_zero_point"};
    for (const std::string* name : {&v.scale, &v.zero_point})
      if (out_.initializers.count(*name) || model_.initializers.count(*name))
        throw Error(ErrorKind::InvalidArgument, "the quantized model needs the name '" + *name +
                                                    "' for the parameters of value '" + value + "', which the model already uses");
    Tensor scale(DType::F32, {}), zero_point(DType::S8, {});
    scale.data<float>()[0] = p.scale[0];
    zero_point.data<int8_t>()[0] = static_cast<int8_t>(p.zero_point[0]);
    out_.initializers[v.scale] = std::move(scale);
    out_.initializers[v.zero_point] = std::move(zero_point);
    return integer_[value] = std::move(v);
  }

  // The s8 form of `value`: itself when it is already s8, else the output of a QuantizeLinear
  // (added once) with the activation parameters from `method`'s ranges.
  std::pair<std::string, const S8Value*> as_integer(const std::string& value, const std::string& method) {
    auto q = integer_.find(value);
    if (q != integer_.end()) return {value, &q->second};
    const std::string name = value + "_quantized";
    if (!integer_.count(name)) {
      const S8Value& v = add_s8_value(name, activation_params(value, method));
      out_.add_node({name, "QuantizeLinear", {value, v.scale, v.zero_point}, {name}});
    }
    return {name, &integer_.at(name)};
  }

  std::string as_float(const std::string& value) {
    auto deferred = deferred_float_.find(value);
    if (deferred != deferred_float_.end()) {  // the float scaling of image bytes, needed after all
      keep_float(deferred->second);
      deferred_float_.erase(deferred);
    }
    auto q = integer_.find(value);
    if (q == integer_.end()) return value;
    const std::string name = value + "_dequantized";
    if (!dequantized_.count(name)) {
      out_.add_node({name, "DequantizeLinear", {value, q->second.scale, q->second.zero_point}, {name}});
      dequantized_.insert(name);
    }
    return name;
  }

  void copy_initializers(const Node& node) {
    for (const auto& in : node.inputs) {
      auto it = model_.initializers.find(in);
      if (it != model_.initializers.end()) out_.initializers[in] = it->second;
    }
  }

  void pass_through(const Node& node) {
    Node n = node;
    auto bytes = requantized_.find(node.inputs[0]);
    if (integer_.count(node.inputs[0]) && !is_graph_output(node.outputs[0])) {
      integer_[node.outputs[0]] = integer_[node.inputs[0]];
    } else if (bytes != requantized_.end() && !is_graph_output(node.outputs[0]) && has_integer_consumer(node.outputs[0], true)) {
      n.inputs[0] = bytes->second;  // on the way from requantized image bytes to an integer layer
      integer_[node.outputs[0]] = integer_.at(bytes->second);
    } else {
      n.inputs[0] = as_float(node.inputs[0]);
    }
    copy_initializers(n);
    out_.add_node(std::move(n));
  }

  void keep_float(const Node& node) {
    Node n = node;
    for (auto& in : n.inputs) in = as_float(in);
    copy_initializers(n);
    out_.add_node(std::move(n));
  }

  // The scaling of image bytes (a DequantizeLinear of u8 codes) whose values an integer layer reads:
  // the bytes go to that layer's input grid in one Requantize (no float tensor between the scaling
  // and the quantization; bit-identical to the two). The float scaling is added only if some
  // other node reads its output (as_float). In dynamic mode the grid is the bytes' own (scale and
  // zero point - 128: every byte b becomes the code b - 128 exactly), so the first layer runs as a
  // static integer layer with f32 output, without a float input or a range to find at run time.
  void scale_bytes(const Node& node) {
    const std::string& v = node.outputs[0];
    const auto [reader, method] = integer_reader(v, true);
    if (reader.empty() || is_graph_output(v)) return keep_float(node);
    std::optional<QuantParams> params;
    if (plan_.mode == QuantMode::Dynamic) {
      params = byte_grid(node);
      if (!params) return keep_float(node);
    } else {
      params = activation_params(reader, method);
    }
    const std::string name = v + "_quantized";
    const S8Value& s8 = add_s8_value(name, *params);
    Node n{name, "Requantize", {node.inputs[0], node.inputs[1], s8.scale, s8.zero_point}, {name}};
    if (node.inputs.size() == 3) n.inputs.push_back(node.inputs[2]);  // x_zero_point, last in Requantize
    copy_initializers(node);
    out_.add_node(std::move(n));
    requantized_[v] = name;
    deferred_float_[v] = node;
  }

  // The s8 grid on which the bytes that `node` (a DequantizeLinear of u8) scales are exact codes:
  // its scale, and its zero point - 128. None when the scale or zero point is not a constant scalar
  // (an initializer, or a Constant node's value_float).
  std::optional<QuantParams> byte_grid(const Node& node) const {
    float scale_value = 0.0f;
    auto scale = model_.initializers.find(node.inputs.at(1));
    const int producer = model_.producer(node.inputs[1]);
    if (scale != model_.initializers.end() && scale->second.numel() == 1 && scale->second.dtype() == DType::F32)
      scale_value = scale->second.data<float>()[0];
    else if (producer >= 0 && model_.nodes[static_cast<size_t>(producer)].op == "Constant" &&
             model_.nodes[static_cast<size_t>(producer)].attributes.count("value_float"))
      scale_value = static_cast<float>(model_.nodes[static_cast<size_t>(producer)].attr_float("value_float", 0.0));
    else
      return std::nullopt;
    int32_t zero_point = 0;
    if (node.inputs.size() > 2) {
      auto zp = model_.initializers.find(node.inputs[2]);
      if (zp == model_.initializers.end() || zp->second.numel() != 1 || zp->second.dtype() != DType::U8) return std::nullopt;
      zero_point = zp->second.data<uint8_t>()[0];
    }
    QuantParams p{8, true, QScheme::Affine, false, -1, {scale_value}, {zero_point - 128}};
    p.validate("the input scaling '" + node.name + "'");
    return p;
  }

  // Conv2D -> QConv2D: weights per output channel as rows [OC, IC/group*kh*kw], s8 input, s8
  // output when an integer layer consumes it, else f32. Dynamic mode: DynamicQConv2D (f32 in and
  // out, the input quantized at run time), except on image bytes (scale_bytes): QConv2D, f32 out.
  void quantize_conv(const Node& node, const OpTraits& traits) {
    const LayerRule rule = checked_rule(node);
    const Tensor& weight4 = model_.initializers.at(node.inputs.at(1));
    const int64_t units = weight4.dim(0), in_channels = weight4.dim(1) * node.attr_int("group", 1);
    const int64_t features = weight4.numel() / units;
    Tensor weight = weight4;
    weight.reshape({units, features});
    const Tensor* bias = node.inputs.size() > 2 ? &model_.initializers.at(node.inputs[2]) : nullptr;
    const std::string prefix = node.name + ".";
    Tensor scale;
    quantize_weights(node, weight, rule, prefix, scale);
    Attributes attributes = {{"in_channels", in_channels},
                             {"kernel_shape", Shape{weight4.dim(2), weight4.dim(3)}},
                             {"activation", node.attr_string("activation", "none")}};
    if (plan_.mode == QuantMode::Dynamic && !integer_.count(node.inputs[0])) {
      attributes["granularity"] = plan_.dynamic_granularity;
      Node n{node.name, traits.dynamic_op, {as_float(node.inputs[0]), prefix + "weight_codes", prefix + "weight_scale"},
             {node.outputs[0]}, attributes};
      copy_window_attributes(node, n);
      return add_dynamic_layer(node, std::move(n));
    }
    const auto [input, in] = as_integer(node.inputs[0], rule.calibration);
    Node n{node.name, traits.quantized_op, integer_layer_inputs(prefix, input, *in), {node.outputs[0]}, attributes};
    copy_window_attributes(node, n);
    finish_integer_layer(node, n, bias, in->params, scale, rule);
  }

  // The layer's rule, checked against what the layer can take.
  LayerRule checked_rule(const Node& node) const {
    const LayerRule rule = plan_.rule_for(node.name);
    if (rule.weight_bits < 2 || rule.weight_bits > 8)
      throw Error(ErrorKind::InvalidArgument, "layer '" + node.name + "': weight bits must be 2..8");
    if (plan_.mode == QuantMode::Dynamic && rule.weight_scheme != QScheme::Symmetric)
      throw Error(ErrorKind::InvalidArgument, "layer '" + node.name + "': dynamic quantization needs symmetric weights");
    return rule;
  }

  // Adds the dynamic layer `n` made from `node`: its weights are symmetric (no zero points) and
  // it keeps node's float bias (input 2), if any, as its last input.
  void add_dynamic_layer(const Node& node, Node n) {
    out_.initializers.erase(node.name + ".weight_zero_point");
    if (node.inputs.size() > 2) {
      n.inputs.push_back(node.inputs[2]);
      out_.initializers[node.inputs[2]] = model_.initializers.at(node.inputs[2]);
    }
    out_.add_node(std::move(n));
  }

  // Quantizes `weight` [units, features] by the rule (or the fixed parameters) into the
  // initializers prefix + weight_codes / weight_scale / weight_zero_point; `scale` gets the scales.
  void quantize_weights(const Node& node, const Tensor& weight, const LayerRule& rule, const std::string& prefix,
                        Tensor& scale) {
    const int64_t units = weight.dim(0), features = weight.dim(1);
    QuantSpec spec{rule.weight_bits, rule.weight_scheme, rule.per_channel, true, true};
    auto fixed_weight = fixed_.weights.find(node.name);
    const QuantParams wp = fixed_weight != fixed_.weights.end() ? fixed_weight->second : choose_weight_params(weight, spec);
    if (fixed_weight != fixed_.weights.end()) {
      wp.validate("weights of layer '" + node.name + "'");
      if (!wp.is_signed || (wp.per_channel() && (wp.axis != 0 || static_cast<int64_t>(wp.channels()) != units)) ||
          (!wp.per_channel() && wp.channels() != 1))
        throw Error(ErrorKind::InvalidArgument, "fixed weight parameters of layer '" + node.name +
                                                    "' must be signed, per tensor or per output channel (" +
                                                    std::to_string(units) + " channels)");
    }
    auto fixed_codes = fixed_.weight_codes.find(node.name);
    if (fixed_codes != fixed_.weight_codes.end() &&
        (fixed_weight == fixed_.weights.end() || static_cast<int64_t>(fixed_codes->second.size()) != units * features))
      throw Error(ErrorKind::InvalidArgument, "fixed weight codes of layer '" + node.name + "' need its weight parameters and " +
                                                  std::to_string(units * features) + " codes");
    const std::vector<int32_t> codes = fixed_codes != fixed_.weight_codes.end() ? fixed_codes->second : quantize_values(weight, wp);
    out_.initializers[prefix + "weight_codes"] = pack_codes(codes, {units, features}, wp.storage_dtype());
    Tensor& packed = out_.initializers[prefix + "weight_codes"];
    packed.reshape({units, static_cast<int64_t>(packed.numel() / units)});
    scale = Tensor(DType::F32, {units});
    Tensor zero(DType::S32, {units});
    for (int64_t n = 0; n < units; ++n) {
      scale.data<float>()[n] = wp.scale[wp.per_channel() ? n : 0];
      zero.data<int32_t>()[n] = wp.zero_point[wp.per_channel() ? n : 0];
    }
    out_.initializers[prefix + "weight_scale"] = scale;
    out_.initializers[prefix + "weight_zero_point"] = zero;
  }

  // The first inputs of an integer layer (graph/ops/integer_inputs.h): s8 input, weights, and the
  // input's activation parameters.
  static std::vector<std::string> integer_layer_inputs(const std::string& prefix, const std::string& input, const S8Value& in) {
    return {input, prefix + "weight_codes", prefix + "weight_scale", prefix + "weight_zero_point", in.scale, in.zero_point};
  }

  // The output parameters (s8 output) and the int32 bias of an integer layer (QDense or QConv2D),
  // in the order of graph/ops/integer_inputs.h, then adds it.
  void finish_integer_layer(const Node& node, Node& n, const Tensor* bias, const QuantParams& in_params,
                            const Tensor& scale, const LayerRule& rule) {
    const std::string prefix = node.name + ".";
    const std::string out_value = node.outputs[0];
    const int64_t units = scale.numel();
    if (bias) {
      // int32 bias at scale input_scale * weight_scale[n], so it adds straight onto the accumulator.
      Tensor q(DType::S32, {units});
      for (int64_t u = 0; u < units; ++u) {
        const double s = static_cast<double>(in_params.scale[0]) * scale.data<float>()[u];
        q.data<int32_t>()[u] = static_cast<int32_t>(
            std::clamp(std::nearbyint(bias->data<float>()[u] / s), -2147483647.0, 2147483647.0));
      }
      out_.initializers[prefix + "bias_q"] = q;
    }
    if (has_integer_consumer(out_value) && !is_graph_output(out_value)) {
      const S8Value& out = add_s8_value(out_value, activation_params(out_value, rule.calibration));
      n.inputs.push_back(out.scale);
      n.inputs.push_back(out.zero_point);
    }
    if (bias) n.inputs.push_back(prefix + "bias_q");
    out_.add_node(std::move(n));
  }

  // Dense -> BlockQDense: weights in blocks of rule.group_size along K (kernels/blockq.h), f32 in
  // and out in every mode. Stored codes are unsigned: the signed code plus 2^(bits-1) (and so the
  // zero point); a symmetric layer stores no zero points (2^(bits-1) everywhere).
  void quantize_block_layer(const Node& node, const OpTraits& traits) {
    const LayerRule rule = plan_.rule_for(node.name);
    if (traits.block_op.empty())
      throw Error(ErrorKind::InvalidArgument, "layer '" + node.name + "' (" + node.op + "): block weights ('group_size') apply to Dense layers only; give it a rule without group_size");
    if (rule.weight_bits < 2 || rule.weight_bits > 4)
      throw Error(ErrorKind::InvalidArgument, "layer '" + node.name + "': block weights have 2, 3 or 4 bits, got " + std::to_string(rule.weight_bits));
    const Tensor& weight = model_.initializers.at(node.inputs.at(1));
    const int64_t units = weight.dim(0), features = weight.dim(1), block = rule.group_size;
    const int64_t blocks = (features + block - 1) / block;
    auto fixed_weight = fixed_.weights.find(node.name);
    QuantParams wp;
    if (fixed_weight != fixed_.weights.end()) {
      wp = fixed_weight->second;
      if (wp.block_size != block || wp.bits != rule.weight_bits || static_cast<int64_t>(wp.channels()) != units * blocks)
        throw Error(ErrorKind::InvalidArgument, "fixed weight parameters of layer '" + node.name + "' must be " +
                                                    std::to_string(rule.weight_bits) + "-bit blocks of " + std::to_string(block));
      wp.validate("weights of layer '" + node.name + "'");
    } else {
      wp = choose_block_weight_params(weight, rule.weight_bits, rule.weight_scheme, block);
    }
    auto fixed_codes = fixed_.weight_codes.find(node.name);
    if (fixed_codes != fixed_.weight_codes.end() &&
        (fixed_weight == fixed_.weights.end() || static_cast<int64_t>(fixed_codes->second.size()) != units * features))
      throw Error(ErrorKind::InvalidArgument, "fixed weight codes of layer '" + node.name + "' need its weight parameters and " +
                                                  std::to_string(units * features) + " codes");
    std::vector<int32_t> codes = fixed_codes != fixed_.weight_codes.end() ? fixed_codes->second : quantize_values(weight, wp);
    const int32_t offset = 1 << (rule.weight_bits - 1);
    for (int32_t& c : codes) c += offset;
    const std::vector<uint8_t> packed = pack_block_codes(codes, units, features, rule.weight_bits, block);
    const std::string prefix = node.name + ".";
    Tensor packed_tensor(DType::U8, {units, blocks * block_bytes(rule.weight_bits, block)});
    std::copy(packed.begin(), packed.end(), packed_tensor.data<uint8_t>());
    Tensor scale(DType::F16, {units, blocks}), zero(DType::U8, {units, blocks});
    for (size_t i = 0; i < wp.scale.size(); ++i) {
      static_cast<uint16_t*>(scale.raw())[i] = f32_to_f16(wp.scale[i]);
      zero.data<uint8_t>()[i] = static_cast<uint8_t>(wp.zero_point[i] + offset);
    }
    const bool affine = rule.weight_scheme == QScheme::Affine;
    out_.initializers[prefix + "weight_codes"] = std::move(packed_tensor);
    out_.initializers[prefix + "weight_scale"] = std::move(scale);
    Node n{node.name, traits.block_op, {as_float(node.inputs[0]), prefix + "weight_codes", prefix + "weight_scale"}, {node.outputs[0]},
           {{"in_features", features}, {"bits", int64_t{rule.weight_bits}}, {"block_size", block},
            {"scheme", std::string(affine ? "affine" : "symmetric")}, {"activation", node.attr_string("activation", "none")}}};
    if (affine) {
      out_.initializers[prefix + "weight_zero_point"] = std::move(zero);
      n.inputs.push_back(prefix + "weight_zero_point");
    }
    if (node.inputs.size() > 2) {
      n.inputs.push_back(node.inputs[2]);
      out_.initializers[node.inputs[2]] = model_.initializers.at(node.inputs[2]);
    }
    out_.add_node(std::move(n));
  }

  // Attention -> QAttention: q, k and v as s8 on their calibrated grids (the q, k, v projections
  // before it then write s8 directly), the output s8 on its grid when an integer layer reads it,
  // else f32; the mask stays f32 (graph/ops/integer_inputs.h, AttentionInputs).
  void quantize_attention(const Node& node, const OpTraits& traits) {
    const LayerRule rule = plan_.rule_for(node.name);
    Node n{node.name, traits.quantized_op, {}, {node.outputs[0]}, node.attributes};
    std::vector<const S8Value*> grids;
    for (size_t i = 0; i < 3; ++i) {
      const auto [input, s8] = as_integer(node.inputs.at(i), rule.calibration);
      n.inputs.push_back(input);
      grids.push_back(s8);
    }
    for (const S8Value* g : grids) n.inputs.push_back(g->scale), n.inputs.push_back(g->zero_point);
    const std::string& out_value = node.outputs[0];
    if (has_integer_consumer(out_value) && !is_graph_output(out_value)) {
      const S8Value& out = add_s8_value(out_value, activation_params(out_value, rule.calibration));
      n.inputs.push_back(out.scale);
      n.inputs.push_back(out.zero_point);
    }
    if (node.inputs.size() > 3) {
      n.inputs.push_back(as_float(node.inputs[3]));
      copy_initializers(n);
    }
    out_.add_node(std::move(n));
  }

  void quantize_dense(const Node& node, const OpTraits& traits) {
    const LayerRule rule = checked_rule(node);
    const Tensor& weight = model_.initializers.at(node.inputs.at(1));
    const int64_t features = weight.dim(1);
    const Tensor* bias = node.inputs.size() > 2 ? &model_.initializers.at(node.inputs[2]) : nullptr;
    const std::string prefix = node.name + ".";
    Tensor scale;
    quantize_weights(node, weight, rule, prefix, scale);
    const std::string activation = node.attr_string("activation", "none");
    const std::string out_value = node.outputs[0];

    if (plan_.mode == QuantMode::Dynamic && !integer_.count(node.inputs[0]))  // (else: it reads image bytes, scale_bytes)
      return add_dynamic_layer(
          node, {node.name, traits.dynamic_op, {as_float(node.inputs[0]), prefix + "weight_codes", prefix + "weight_scale"},
                 {out_value}, {{"in_features", features}, {"activation", activation}, {"granularity", plan_.dynamic_granularity}}});
    const auto [input, in] = as_integer(node.inputs[0], rule.calibration);
    Node n{node.name, traits.quantized_op, integer_layer_inputs(prefix, input, *in), {out_value},
           {{"in_features", features}, {"activation", activation}}};
    finish_integer_layer(node, n, bias, in->params, scale, rule);
  }

  const Graph& model_;
  const QuantPlan& plan_;
  const std::map<std::string, Calibration>& ranges_;
  const FixedQuantParams& fixed_;
  Graph out_;
  std::map<std::string, S8Value> integer_;  // s8 values and their parameters
  std::map<std::string, std::string> requantized_;  // scaled image bytes -> their s8 form (scale_bytes)
  std::map<std::string, Node> deferred_float_;     // and the float scaling, emitted only if read
  std::set<std::string> dequantized_;
};

// A convolution followed by an activation it can absorb (a Relu) that is the only consumer of its
// output: one convolution with the activation fused (the same float function), producing the
// activation's output value, so that the integer convolution can apply it as its output clamp.
Graph fuse_conv_relu(Graph g) {
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node relu = g.nodes[i];
    const std::string fused = traits_of(relu).fusable_as;
    if (fused.empty() || relu.inputs.size() != 1) continue;
    const std::string& v = relu.inputs[0];
    int uses = 0;
    for (const auto& n : g.nodes) uses += static_cast<int>(std::count(n.inputs.begin(), n.inputs.end(), v));
    if (uses != 1 || std::find(g.outputs.begin(), g.outputs.end(), v) != g.outputs.end()) continue;
    auto conv = std::find_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) {
      const OpTraits& t = traits_of(n);
      return t.quantizable == OpTraits::Quantizable::ConvWeights && t.fuses_activation && n.outputs.size() == 1 &&
             n.outputs[0] == v;
    });
    if (conv == g.nodes.end() || conv->attr_string("activation", "none") != "none") continue;
    conv->attributes["activation"] = fused;
    conv->outputs[0] = relu.outputs[0];
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
  }
  g.validate();
  return g;
}

// Weight codes of an integer layer (static or dynamic, dense or convolution) back to float [units, features].
Tensor dequantized_weight(const Graph& q, const Node& node) {
  const Tensor& codes = q.initializers.at(node.inputs[1]);
  const Tensor& scale = q.initializers.at(node.inputs[2]);
  int64_t features = node.attr_int("in_features", 0);
  if (is_conv_layer(node)) {
    const std::vector<int64_t>& k = node.attr("kernel_shape").as_ints();
    features = node.attr_int("in_channels", 0) / node.attr_int("group", 1) * k[0] * k[1];
  }
  const int64_t units = codes.dim(0);
  const std::vector<int32_t> values = unpack_codes(codes, {units, features});
  const int32_t* zero = is_dynamic_layer(node) ? nullptr : q.initializers.at(node.inputs[3]).data<int32_t>();  // symmetric
  Tensor w(DType::F32, {units, features});
  for (int64_t u = 0; u < units; ++u)
    for (int64_t k = 0; k < features; ++k)
      w.data<float>()[u * features + k] =
          scale.data<float>()[u] * static_cast<float>(values[u * features + k] - (zero ? zero[u] : 0));
  return w;
}

// A BlockQDense layer's float weights [units, K] and bias [units] (zeros if it has none).
std::pair<Tensor, Tensor> block_layer_weights(const Graph& q, const Node& node) {
  const int bits = static_cast<int>(node.attr_int("bits", 4));
  const int64_t block = node.attr_int("block_size", 32), features = node.attr_int("in_features", 0);
  const Tensor& codes = q.initializers.at(node.inputs[1]);
  const Tensor& scale = q.initializers.at(node.inputs[2]);
  const bool affine = node.attr_string("scheme", "symmetric") == "affine";
  const int64_t units = codes.dim(0), blocks = (features + block - 1) / block;
  const std::vector<int32_t> values =
      unpack_block_codes(std::span(codes.data<uint8_t>(), codes.nbytes()), units, features, bits, block);
  const uint8_t* zero = affine ? q.initializers.at(node.inputs[3]).data<uint8_t>() : nullptr;
  const uint16_t* d = static_cast<const uint16_t*>(scale.raw());
  Tensor w(DType::F32, {units, features}), bias(DType::F32, {units});
  for (int64_t u = 0; u < units; ++u)
    for (int64_t k = 0; k < features; ++k) {
      const size_t b = static_cast<size_t>(u * blocks + k / block);
      w.data<float>()[u * features + k] =
          f16_to_f32(d[b]) * static_cast<float>(values[u * features + k] - (zero ? zero[b] : 1 << (bits - 1)));
    }
  const size_t bias_input = affine ? 4 : 3;
  if (node.inputs.size() > bias_input) std::copy_n(q.initializers.at(node.inputs[bias_input]).data<float>(), units, bias.data<float>());
  return {std::move(w), std::move(bias)};
}

// The float bias [units] of an integer layer: QDense / QConv2D hold it as int32 at scale
// x_scale * weight_scale (graph/ops/integer_inputs.h), the dynamic layers as f32 (input 3); zeros
// if it has none.
Tensor float_bias(const Graph& q, const Node& node, int64_t units) {
  Tensor bias(DType::F32, {units});
  const float* scale = q.initializers.at(node.inputs[2]).data<float>();
  if (is_dynamic_layer(node)) {
    if (node.inputs.size() > 3) std::copy_n(q.initializers.at(node.inputs[3]).data<float>(), units, bias.data<float>());
    return bias;
  }
  const auto layout = ops::IntegerLayerInputs::of(node.inputs.size());
  if (!layout.has_bias()) return bias;
  const int32_t* b = q.initializers.at(node.inputs[layout.bias]).data<int32_t>();
  const double x_scale = q.initializers.at(node.inputs[layout.x_scale]).data<float>()[0];
  for (int64_t u = 0; u < units; ++u) bias.data<float>()[u] = static_cast<float>(b[u] * (x_scale * scale[u]));
  return bias;
}
}  // namespace

void check_plan_layers(const Graph& model, const QuantPlan& plan) {
  const auto layers = quantizable_layers(model);
  for (const auto& [name, rule] : plan.layers)
    if (std::find(layers.begin(), layers.end(), name) == layers.end())
      throw Error(ErrorKind::InvalidArgument, "the plan names layer '" + name + "', which the model does not have as a Dense or Conv2D layer");
}

Graph quantize_model(const Graph& model, const QuantPlan& plan, const std::map<std::string, Calibration>& ranges,
                     const FixedQuantParams& fixed) {
  if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "the model is already quantized (dequantize it first)");
  check_plan_layers(model, plan);
  // BatchNorm folded into the layer before it, and a ReLU after a convolution fused into it: both
  // keep the float function, and the layers' output values keep names the calibration knows.
  return Transform(prepare_for_quantization(model), plan, ranges, fixed).run();
}

Graph prepare_for_quantization(const Graph& model) { return fuse_conv_relu(fold_batchnorm(model)); }

Graph dequantize_model(const Graph& q) {
  Graph g;
  g.name = q.name;
  g.inputs = q.inputs;
  g.outputs = q.outputs;
  g.metadata = q.metadata;
  g.metadata.erase("quantization");
  std::map<std::string, std::string> alias;  // skipped Q/DQ outputs -> their float source
  const auto info = q.infer_shapes();
  auto resolve = [&](std::string v) {
    while (alias.count(v)) v = alias[v];
    return v;
  };
  for (const auto& node : q.nodes) {
    const OpTraits& traits = traits_of(node);
    // A Requantize of image bytes (scale_bytes): back to the scaling of the bytes, whose output
    // the Requantize's output is named after ("<value>_quantized").
    if (traits.boundary == OpTraits::Boundary::Quantize && info.at(node.inputs[0]).dtype != DType::F32) {
      const std::string& out = node.outputs[0];
      const std::string suffix = "_quantized";
      const bool named = out.size() > suffix.size() && out.compare(out.size() - suffix.size(), suffix.size(), suffix) == 0;
      const std::string v = named ? out.substr(0, out.size() - suffix.size()) : out + "_scaled";
      Node dq{v, "DequantizeLinear", {node.inputs[0], node.inputs[1]}, {v}};
      if (node.inputs.size() == 5) dq.inputs.push_back(node.inputs[4]);
      for (const auto& in : dq.inputs)
        if (q.initializers.count(in)) g.initializers[in] = q.initializers.at(in);
      alias[out] = v;
      if (q.producer(v) < 0) g.add_node(std::move(dq));  // (the quantized model may keep the float scaling too)
      continue;
    }
    // The casts the quantize pass put in (their input is a node's output); a DequantizeLinear of a
    // graph input (image bytes scaled in the graph) is part of the float function and stays.
    if (traits.boundary != OpTraits::Boundary::None && q.producer(node.inputs[0]) >= 0) {
      alias[node.outputs[0]] = node.inputs[0];
      continue;
    }
    if (traits.is_integer_layer() && is_conv_layer(node)) {
      const std::string prefix = node.name + ".";
      Tensor w = dequantized_weight(q, node);
      const std::vector<int64_t>& k = node.attr("kernel_shape").as_ints();
      const int64_t units = w.dim(0);
      w.reshape({units, node.attr_int("in_channels", 0) / node.attr_int("group", 1), k[0], k[1]});
      Node n{node.name, traits.float_op, {resolve(node.inputs[0]), prefix + "weight", prefix + "bias"}, node.outputs,
             {{"activation", node.attr_string("activation", "none")}}};
      copy_window_attributes(node, n);
      g.initializers[prefix + "weight"] = w;
      g.initializers[prefix + "bias"] = float_bias(q, node, units);
      g.add_node(std::move(n));
      continue;
    }
    if (traits.is_integer_layer() && find_op(traits.float_op).traits().quantizable == OpTraits::Quantizable::Activations) {
      const auto layout = ops::AttentionInputs::of(node.inputs.size());  // (QAttention: no weights)
      Node n{node.name, traits.float_op, {resolve(node.inputs[0]), resolve(node.inputs[1]), resolve(node.inputs[2])}, node.outputs,
             node.attributes};
      if (layout.has_mask()) {
        n.inputs.push_back(resolve(node.inputs[layout.mask]));
        auto it = q.initializers.find(n.inputs.back());
        if (it != q.initializers.end()) g.initializers[it->first] = it->second;
      }
      g.add_node(std::move(n));
      continue;
    }
    if (traits.block_weights) {
      const std::string prefix = node.name + ".";
      Node n{node.name, traits.float_op, {resolve(node.inputs[0]), prefix + "weight", prefix + "bias"}, node.outputs,
             {{"activation", node.attr_string("activation", "none")}}};
      std::tie(g.initializers[prefix + "weight"], g.initializers[prefix + "bias"]) = block_layer_weights(q, node);
      g.add_node(std::move(n));
      continue;
    }
    if (traits.is_integer_layer()) {
      const std::string prefix = node.name + ".";
      Node n{node.name, traits.float_op, {resolve(node.inputs[0]), prefix + "weight", prefix + "bias"}, node.outputs,
             {{"activation", node.attr_string("activation", "none")}}};
      g.initializers[prefix + "weight"] = dequantized_weight(q, node);
      g.initializers[prefix + "bias"] = float_bias(q, node, g.initializers[prefix + "weight"].dim(0));
      g.add_node(std::move(n));
      continue;
    }
    Node n = node;
    for (auto& in : n.inputs) {
      in = resolve(in);
      auto it = q.initializers.find(in);
      if (it != q.initializers.end()) g.initializers[in] = it->second;
    }
    g.add_node(std::move(n));
  }
  g.validate();
  return g;
}

}  // namespace lowbit
