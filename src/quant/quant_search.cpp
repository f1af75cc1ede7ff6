// Sensitivity analysis and the accuracy-driven search of quantization plans.
#include "lowbit/quant_search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "graph/ops/integer_inputs.h"
#include "lowbit/executor.h"
#include "lowbit/ops.h"
#include "lowbit/train.h"

namespace lowbit {

int64_t initializer_bytes(const Graph& model) {
  int64_t bytes = 0;
  for (const auto& [name, t] : model.initializers) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

Tensor value_as_float(const Graph& model, const Executor& run, const std::string& value) {
  const Tensor& v = run.value(value);
  if (v.dtype() == DType::F32) return v.clone();
  const int p = model.producer(value);
  if (v.dtype() != DType::S8 || p < 0)
    throw Error(ErrorKind::InvalidArgument, "value '" + value + "' is neither f32 nor an s8 node output");
  // The parameters are inputs of the QuantizeLinear or integer layer that writes the value (looking
  // through the ops that pass s8 values on unchanged).
  const Node* node = &model.nodes[p];
  while (traits_of(*node).passes_quantized && model.producer(node->inputs[0]) >= 0) node = &model.nodes[model.producer(node->inputs[0])];
  const OpTraits& traits = traits_of(*node);
  size_t scale_index = ops::IntegerLayerInputs::none;
  if (node->op == "QAttention")
    scale_index = ops::AttentionInputs::of(node->inputs.size()).y_scale;
  else if (traits.is_integer_layer())
    scale_index = ops::IntegerLayerInputs::of(node->inputs.size()).y_scale;
  else if (traits.boundary == OpTraits::Boundary::Quantize)  // Requantize [x, x_scale, y_scale, ...], QuantizeLinear [x, scale, ...]
    scale_index = node->inputs.size() >= 4 ? 2 : 1;
  if (scale_index == ops::IntegerLayerInputs::none || scale_index + 1 >= node->inputs.size() ||
      !model.initializers.count(node->inputs[scale_index]) || !model.initializers.count(node->inputs[scale_index + 1]))
    throw Error(ErrorKind::InvalidArgument, "value '" + value + "': no constant scale and zero point for it at node '" + node->name + "'");
  const float scale = model.initializers.at(node->inputs[scale_index]).data<float>()[0];
  const int32_t zero = model.initializers.at(node->inputs[scale_index + 1]).data<int8_t>()[0];
  Tensor out(DType::F32, v.shape());
  for (int64_t i = 0; i < v.numel(); ++i) out.data<float>()[i] = scale * static_cast<float>(v.data<int8_t>()[i] - zero);
  return out;
}

namespace {

// Outputs of `layers` for the first batch of `data`.
// The given values (as float) on the first 256 samples of `data`.
std::map<std::string, Tensor> value_outputs(const Graph& model, const Dataset& data, const std::vector<std::string>& values) {
  Executor run(model);
  std::vector<uint32_t> idx(static_cast<size_t>(std::min<int64_t>(256, data.size())));
  std::iota(idx.begin(), idx.end(), 0u);
  gather_batch(data, idx, model, run.input(model.inputs.at(0).name));
  run.forward();
  std::map<std::string, Tensor> out;
  for (const auto& v : values) out[v] = value_as_float(model, run, v);
  return out;
}

// The value the node named `layer` produces. In a quantized model a convolution folded with its
// BatchNorm (and ReLU) produces what the last folded node produced in the float model, so
// comparing that value compares like with like.
std::string output_of(const Graph& model, const std::string& layer) {
  for (const auto& node : model.nodes)
    if (node.name == layer) return node.outputs.at(0);
  throw Error(ErrorKind::InvalidArgument, "the model has no layer named '" + layer + "'");
}

// The fields of a rule that decide its GPTQ codes.
std::string rule_key(const LayerRule& r) {
  return std::to_string(r.weight_bits) + (r.per_channel ? "c" : "t") + name_of(r.weight_scheme) + std::to_string(r.group_size) +
         (r.act_order ? "o" : "");
}

QuantPlan single_layer_plan(const std::string& layer, const LayerRule& rule, QuantMode mode) {
  QuantPlan p;
  p.mode = mode == QuantMode::Dynamic ? QuantMode::Dynamic : QuantMode::Partial;
  p.defaults = rule;
  p.defaults.quantize = false;
  p.layers[layer] = rule;
  p.layers[layer].quantize = true;
  return p;
}

}  // namespace

std::vector<LayerSensitivity> analyze_sensitivity(const Graph& model, const Dataset& validation, const LayerRule& rule,
                                                  QuantMode mode, const std::map<std::string, Calibration>& ranges) {
  const double float_accuracy = evaluate(model, validation).accuracy;
  const auto layers = quantizable_layers(model);
  std::vector<LayerSensitivity> result;
  for (const auto& layer : layers) {
    // Block weights are for the layers that have a block form (Dense); the others (convolutions)
    // take the rule with whole rows, as quantize() gives them.
    LayerRule own = rule;
    const Node& quantized_node = model.nodes[model.producer(output_of(model, layer))];
    if (own.group_size > 0 && traits_of(quantized_node).has_weights() && traits_of(quantized_node).block_op.empty()) own.group_size = 0;
    QuantPlan plan = single_layer_plan(layer, own, mode);
    if (!quantizes(quantized_node, plan)) continue;  // (attention under dynamic or weight-only rules: float)
    if (mode == QuantMode::Dynamic) {
      // Dynamic mode: layers not in the plan are float because rule_for says quantize = false.
      plan.defaults.quantize = false;
    }
    Graph q = quantize_model(model, plan, ranges);
    LayerSensitivity s;
    s.layer = layer;
    const Node& node = model.nodes[model.producer(output_of(model, layer))];
    for (const auto& in : node.inputs)
      if (model.initializers.count(in)) s.parameters += model.initializers.at(in).numel();
    s.accuracy = evaluate(q, validation).accuracy;
    s.drop_points = (float_accuracy - s.accuracy) * 100.0;
    const std::string value = output_of(q, layer);
    const ErrorMetrics m = compare_tensors(value_outputs(model, validation, {value}).at(value), value_outputs(q, validation, {value}).at(value));
    s.sqnr_db = m.sqnr_db, s.cosine = m.cosine;
    result.push_back(s);
  }
  return result;
}

SearchResult search_plan(const Graph& model, const Dataset& validation, const std::map<std::string, Calibration>& ranges,
                         const SearchOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  if (options.objective != "size" && options.objective != "speed")
    throw Error(ErrorKind::InvalidArgument, "objective must be \"size\" or \"speed\", got \"" + options.objective + "\"");
  if (options.mode == QuantMode::Partial) throw Error(ErrorKind::InvalidArgument, "search mode must be full or dynamic");

  SearchResult r;
  const std::vector<int32_t> float_predictions = predict_classes(model, validation);
  int64_t float_correct = 0;
  for (int64_t i = 0; i < validation.size(); ++i) float_correct += float_predictions[i] == validation.labels[i];
  r.float_accuracy = static_cast<double>(float_correct) / std::max<int64_t>(validation.size(), 1);
  const auto layers = quantizable_layers(model);
  std::vector<std::string> methods;
  for (const char* m : {"minmax", "percentile", "mse", "kl", "moving_average"})
    if (ranges.count(m)) methods.push_back(m);
  if (options.mode == QuantMode::Full && methods.empty())
    throw Error(ErrorKind::InvalidArgument, "the search needs calibration ranges for at least one method");

  // GPTQ codes per (layer, rule), from Hessians computed the first time a candidate asks for them.
  const Graph prepared = options.calibration_data ? prepare_for_quantization(model) : Graph{};
  std::map<std::string, Tensor> hessians;
  std::map<std::string, FixedQuantParams> gptq_cache;
  auto gptq_fixed = [&](const QuantPlan& plan) {
    FixedQuantParams fixed;
    for (const auto& node : prepared.nodes) {
      const LayerRule rule = plan.rule_for(node.name);
      if (!gptq_rounds(node, rule)) continue;
      if (hessians.empty()) {
        std::vector<std::string> eligible;
        for (const auto& n : prepared.nodes)
          if (gptq_rounds(n, LayerRule{.rounding = "gptq"})) eligible.push_back(n.name);
        hessians = layer_hessians(prepared, *options.calibration_data, eligible, options.calibration_samples);
      }
      const std::string key = node.name + "|" + rule_key(rule);
      auto cached = gptq_cache.find(key);
      if (cached == gptq_cache.end()) {
        FixedQuantParams one;
        gptq_layer(prepared, node, rule, hessians.at(node.name), one);
        cached = gptq_cache.emplace(key, std::move(one)).first;
      }
      fixed.weights[node.name] = cached->second.weights.at(node.name);
      fixed.weight_codes[node.name] = cached->second.weight_codes.at(node.name);
    }
    return fixed;
  };

  struct Candidate {
    QuantPlan plan;
    double accuracy = 0, drop = 1e9, margin = 0;
    int64_t bytes = 0;
    bool meets(double max_drop) const { return drop + margin <= max_drop; }
  };
  auto try_plan = [&](const QuantPlan& plan) {
    Candidate c;
    c.plan = plan;
    Graph q = quantize_model(model, plan, ranges, gptq_fixed(plan));
    const std::vector<int32_t> predictions = predict_classes(q, validation);
    // Paired difference per sample: d = [float correct] - [quantized correct], in {-1, 0, 1}.
    const double n = static_cast<double>(std::max<int64_t>(validation.size(), 1));
    double sum = 0, sum_sq = 0, correct = 0;
    for (int64_t i = 0; i < validation.size(); ++i) {
      const int d = (float_predictions[i] == validation.labels[i]) - (predictions[i] == validation.labels[i]);
      sum += d, sum_sq += d * d, correct += predictions[i] == validation.labels[i];
    }
    const double mean = sum / n;
    c.accuracy = correct / n;
    c.drop = mean * 100.0;
    c.margin = options.confidence_z * std::sqrt(std::max(sum_sq / n - mean * mean, 0.0) / n) * 100.0;
    c.bytes = initializer_bytes(q);
    ++r.evaluations;
    return c;
  };
  auto out_of_time = [&] {
    if (elapsed() > options.time_budget_seconds) r.timed_out = true;
    return r.timed_out;
  };

  // 1. Uniform 8-bit, per-channel symmetric weights, each calibration method; keep the best.
  QuantPlan base;
  base.mode = options.mode;
  base.defaults = LayerRule{};
  for (const auto& l : layers) base.layers[l] = base.defaults;
  Candidate best = try_plan(base);
  auto describe = [](const Candidate& c) {
    char text[96];
    std::snprintf(text, sizeof text, "drop %.2f +- %.2f points, %lld bytes", c.drop, c.margin, static_cast<long long>(c.bytes));
    return std::string(text);
  };
  log("uniform int8, calibration " + base.defaults.calibration + ": " + describe(best));
  if (options.mode == QuantMode::Full) {
    for (const auto& m : methods) {
      if (m == "minmax" || out_of_time()) continue;
      QuantPlan p = base;
      for (auto& [l, rule] : p.layers) rule.calibration = m;
      p.defaults.calibration = m;
      Candidate c = try_plan(p);
      log("uniform int8, calibration " + m + ": " + describe(c));
      if (c.drop + c.margin < best.drop + best.margin) best = c;
    }
  }

  // 2. Per-layer sensitivity at 8 bits guides the next steps.
  r.sensitivity = analyze_sensitivity(model, validation, best.plan.defaults, options.mode, ranges);
  std::vector<LayerSensitivity> order = r.sensitivity;

  // 3. If int8 everywhere loses too much, fall back to float for the most sensitive layers.
  if (!best.meets(options.max_drop_points)) {
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.drop_points > b.drop_points; });
    Candidate current = best;
    for (const auto& s : order) {
      if (current.meets(options.max_drop_points) || out_of_time()) break;
      QuantPlan p = current.plan;
      p.mode = options.mode == QuantMode::Dynamic ? QuantMode::Dynamic : QuantMode::Partial;
      p.layers[s.layer].quantize = false;
      current = try_plan(p);
      log("keep " + s.layer + " in float: " + describe(current));
      if (current.drop + current.margin < best.drop + best.margin) best = current;
    }
  }

  // 4. Objective size: for each layer, least sensitive per parameter first, the fewest weight
  //    bits (and so the smallest storage) that still meets the drop; symmetric, then affine.
  if (options.objective == "size" && best.meets(options.max_drop_points)) {
    order = r.sensitivity;
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return a.drop_points / std::max<int64_t>(a.parameters, 1) < b.drop_points / std::max<int64_t>(b.parameters, 1);
    });
    std::vector<int> ascending = options.bits;
    std::sort(ascending.begin(), ascending.end());
    for (const auto& s : order) {
      if (!best.plan.rule_for(s.layer).quantize || s.parameters == 0) continue;  // (no weights to make smaller)
      bool accepted = false;
      for (int bits : ascending) {
        if (accepted || bits >= best.plan.rule_for(s.layer).weight_bits || out_of_time()) break;
        // Symmetric, then affine, each rounded to nearest, then (4 bits or fewer, with
        // calibration data) with GPTQ: the first that meets the drop is kept.
        const bool gptq = options.calibration_data && bits <= 4;
        for (const std::string rounding : {"nearest", "gptq"}) {
          if (accepted || (rounding == "gptq" && !gptq)) break;
          for (QScheme scheme : {QScheme::Symmetric, QScheme::Affine}) {
            if (scheme == QScheme::Affine && options.mode == QuantMode::Dynamic) continue;
            if (out_of_time()) break;
            QuantPlan p = best.plan;
            p.layers[s.layer].weight_bits = bits;
            p.layers[s.layer].weight_scheme = scheme;
            p.layers[s.layer].rounding = rounding;
            Candidate c = try_plan(p);
            log(s.layer + " at " + std::to_string(bits) + " bits " + name_of(scheme) +
                (rounding == "gptq" ? ", gptq" : "") + ": " + describe(c));
            if (c.meets(options.max_drop_points) && c.bytes <= best.bytes) {
              best = c;
              accepted = true;
              break;
            }
          }
        }
      }
    }
  }

  r.plan = best.plan;
  r.accuracy = best.accuracy;
  r.drop_points = best.drop;
  r.margin_points = best.margin;
  r.weight_bytes = best.bytes;
  r.met = best.meets(options.max_drop_points);
  r.seconds = elapsed();
  return r;
}

}  // namespace lowbit
