// quantize(): the steps of `lowbit quantize` (include/lowbit/workflow.h).
#include <algorithm>

#include "lowbit/ops.h"
#include "lowbit/workflow.h"

namespace lowbit {
namespace {

// The validation split for accuracy-driven decisions: the last `count` training samples, never
// the test set.
Dataset validation_split(const Dataset& train, int64_t count) {
  return train.slice(train.size() - std::min(count, train.size()), train.size());
}

const Dataset& need_data(const QuantizeOptions& o, const char* why) {
  if (!o.calibration_data)
    throw Error(ErrorKind::InvalidArgument, std::string("quantize: ") + why + " needs data (calibration_data)");
  return *o.calibration_data;
}

}  // namespace

bool quantize_needs_data(const QuantizeOptions& o) {
  const bool calibrating = o.mode != QuantMode::Dynamic && (o.ranges.empty() || o.smooth_alpha);
  const bool by_sensitivity = o.mode == QuantMode::Partial && o.layers.empty() && !o.plan;
  const bool gptq = o.plan ? plan_uses_gptq(*o.plan) : o.rounding == "gptq";
  return calibrating || by_sensitivity || o.max_drop.has_value() || gptq;
}

BitWidthDefaults defaults_for_bits(int weight_bits) {
  BitWidthDefaults d;
  if (weight_bits <= 4) d.rounding = "gptq";
  if (weight_bits <= 3) {
    d.weight_scheme = QScheme::Affine;
    d.lsq = true;
  }
  return d;
}

AppliedDefaults apply_bit_width_defaults(QuantizeOptions& o, bool scheme_given, bool rounding_given, bool has_data) {
  AppliedDefaults applied;
  if (o.plan || o.max_drop) return applied;
  const BitWidthDefaults d = defaults_for_bits(o.weight_bits);
  if (!scheme_given && o.mode != QuantMode::Dynamic && d.weight_scheme != o.weight_scheme) {
    o.weight_scheme = d.weight_scheme;
    applied.scheme = true;
  }
  if (!rounding_given && has_data && d.rounding != o.rounding) {
    o.rounding = d.rounding;
    applied.rounding = true;
  }
  return applied;
}

QuantizeResult quantize(const Graph& float_model, const QuantizeOptions& o) {
  if (is_quantized(float_model)) throw Error(ErrorKind::InvalidArgument, "the model is already quantized");
  if (o.smooth_alpha && o.mode == QuantMode::Dynamic)
    throw Error(ErrorKind::InvalidArgument, "smoothing (SmoothQuant) is for static quantization: dynamic mode quantizes activations at run time");
  if (o.smooth_alpha && !o.ranges.empty())
    throw Error(ErrorKind::InvalidArgument, "smoothing changes the activations: calibrate here (calibration_data), not with given ranges");
  if (o.rounding != "nearest" && o.rounding != "gptq")
    throw Error(ErrorKind::InvalidArgument, "rounding must be \"nearest\" or \"gptq\", got \"" + o.rounding + "\"");
  if (o.group_size != 0 && o.group_size != 32 && o.group_size != 64 && o.group_size != 128)
    throw Error(ErrorKind::InvalidArgument, "group size must be 32, 64 or 128 (0: whole rows), got " + std::to_string(o.group_size));
  if (o.group_size != 0 && (o.weight_bits < 2 || o.weight_bits > 4 || !o.per_channel))
    throw Error(ErrorKind::InvalidArgument, "block weights (group size " + std::to_string(o.group_size) +
                                                ") have 2, 3 or 4 bits per channel, got " + std::to_string(o.weight_bits) +
                                                (o.per_channel ? " bits" : " bits per tensor"));
  const bool searching = o.max_drop.has_value();
  if (!o.float_layers.empty() && (o.plan || searching))
    throw Error(ErrorKind::InvalidArgument, "float layers are chosen here or by the plan / search, not both: drop the float "
                                            "layers, or keep them float in the plan");
  QuantizeResult result;
  // SmoothQuant: every step below sees the smoothed float model (the same function).
  Graph smoothed;
  if (o.smooth_alpha) {
    SmoothOptions so;
    so.alpha = *o.smooth_alpha;
    so.samples = o.calibration_samples;
    smoothed = smooth_activations(float_model, need_data(o, "smoothing"), so, &result.smoothed_layers);
  }
  const Graph& model = o.smooth_alpha ? smoothed : float_model;

  std::map<std::string, Calibration> ranges = o.ranges;
  if (o.mode != QuantMode::Dynamic && ranges.empty()) {
    std::vector<std::string> methods = {o.calibration_method};
    if (searching) methods = {"minmax", "percentile", "mse", "kl"};
    const Dataset& data = need_data(o, "calibration");
    for (const auto& m : methods) {
      CalibrationOptions c;
      c.method = calibration_method_from_name(m);
      c.samples = o.calibration_samples;
      ranges[m] = calibrate(model, data, c);
    }
  }
  const std::string default_method =
      ranges.empty() ? "minmax" : (ranges.count(o.calibration_method) ? o.calibration_method : ranges.begin()->first);

  QuantPlan& plan = result.plan;
  if (o.plan) {
    plan = *o.plan;
  } else if (searching) {
    SearchOptions s;
    s.max_drop_points = *o.max_drop;
    s.objective = o.objective;
    s.time_budget_seconds = o.time_budget_seconds;
    s.mode = o.mode == QuantMode::Dynamic ? QuantMode::Dynamic : QuantMode::Full;
    s.log = o.log;
    s.calibration_data = o.calibration_data;  // GPTQ candidates at 4 bits and fewer
    s.calibration_samples = o.calibration_samples;
    const Dataset validation = validation_split(need_data(o, "a search"), o.validation_samples);
    result.validation_samples = validation.size();
    result.search = search_plan(model, validation, ranges, s);
    plan = result.search->plan;
    result.sensitivity = result.search->sensitivity;
    result.met = result.search->met;
  } else {
    plan.mode = o.mode;
    plan.defaults.weight_bits = o.weight_bits;
    plan.defaults.per_channel = o.per_channel;
    plan.defaults.group_size = o.group_size;
    plan.defaults.weight_scheme = o.weight_scheme;
    plan.defaults.calibration = default_method;
    plan.defaults.rounding = o.rounding;
    plan.defaults.act_order = o.act_order;
    plan.dynamic_granularity = o.dynamic_granularity;
    if (o.mode == QuantMode::Partial) {
      std::vector<std::string> chosen;
      if (!o.layers.empty()) {
        chosen = select_layers(model, o.layers);
      } else {
        // Sensitivity analysis picks the layers: the keep_float most sensitive stay float.
        const Dataset validation = validation_split(need_data(o, "choosing layers by sensitivity"), o.validation_samples);
        result.validation_samples = validation.size();
        result.sensitivity = analyze_sensitivity(model, validation, plan.defaults, QuantMode::Full, ranges);
        auto sorted = result.sensitivity;
        std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.drop_points < b.drop_points; });
        for (size_t i = 0; i + std::max(o.keep_float, 0) < sorted.size(); ++i) chosen.push_back(sorted[i].layer);
      }
      for (const auto& l : chosen) {
        plan.layers[l] = plan.defaults;
        plan.layers[l].quantize = true;
      }
    }
    for (const auto& l : select_layers(model, o.float_layers)) {
      LayerRule rule = plan.rule_for(l);
      rule.quantize = false;
      plan.layers[l] = rule;
    }
  }
  if (!o.plan) {
    plan.activation_scheme = o.activation_scheme;
    // Block weights are for Dense layers: the other quantizable layers (convolutions) keep whole
    // rows, with a rule of their own so that the plan says what was done.
    if (plan.defaults.group_size > 0)
      for (const auto& node : model.nodes)
        if (traits_of(node).has_weights() && traits_of(node).block_op.empty()) {
          LayerRule rule = plan.rule_for(node.name);
          rule.group_size = 0;
          plan.layers[node.name] = rule;
        }
  }
  const FixedQuantParams fixed =
      plan_uses_gptq(plan) ? gptq_weights(model, plan, need_data(o, "GPTQ rounding"), o.calibration_samples) : FixedQuantParams{};
  result.model = quantize_model(model, plan, ranges, fixed);
  if (o.test_data) {
    result.float_test = evaluate(float_model, *o.test_data);
    result.test = evaluate(result.model, *o.test_data);
  }
  return result;
}

}  // namespace lowbit
