// lowbit/quant_search.h - where does accuracy go, and which plan keeps it?
//
// analyze_sensitivity quantizes one layer at a time (everything else float) and measures the
// accuracy drop on validation data and the SQNR / cosine similarity of that layer's output.
// search_plan looks for the per-layer rules (weight bits 8/6/4/3/2, granularity, weight scheme,
// calibration method, rounding to nearest or GPTQ) that meet a maximum accuracy drop, smallest or fastest first, guided by
// those measurements. It always returns the best plan found within its time budget.
//
//   lowbit::SearchOptions options;           // --max-drop 0.5 points, objective size, 60 s
//   lowbit::SearchResult r = lowbit::search_plan(model, validation, ranges_by_method, options);
//   if (!r.met) { /* r.plan is the best found; r.drop_points > options.max_drop_points */ }
//   lowbit::save_plan(r.plan, "plan.json");
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lowbit/quantize.h"

namespace lowbit {

struct LayerSensitivity {
  std::string layer;
  int64_t parameters = 0;
  double accuracy = 0;       // of the model with only this layer quantized
  double drop_points = 0;    // float accuracy minus that, in percentage points
  double sqnr_db = 0;        // of this layer's output against the float model's
  double cosine = 1;
};

// `rule` is applied to each layer in turn (mode Full or Dynamic).
std::vector<LayerSensitivity> analyze_sensitivity(const Graph& model, const Dataset& validation, const LayerRule& rule,
                                                  QuantMode mode, const std::map<std::string, Calibration>& ranges);

struct SearchOptions {
  double max_drop_points = 0.5;
  // A plan must meet max_drop with this one-sided confidence: drop + z * (standard error of the
  // paired accuracy difference) <= max_drop, so that it holds on unseen data too. 0 disables.
  double confidence_z = 1.645;
  std::string objective = "size";         // "size" or "speed"
  double time_budget_seconds = 60;
  QuantMode mode = QuantMode::Full;       // Full (static) or Dynamic layers
  std::vector<int> bits = {8, 6, 4, 3, 2};
  // With calibration data, a layer tried at 4 bits or fewer is also tried with GPTQ rounding
  // (Hessians from the first calibration_samples samples, computed once, when first needed).
  const Dataset* calibration_data = nullptr;
  int64_t calibration_samples = 1000;
  std::function<void(const std::string&)> log;  // one line per step, optional
};

struct SearchResult {
  QuantPlan plan;
  bool met = false;               // drop_points + margin_points <= max_drop_points
  bool timed_out = false;
  double float_accuracy = 0, accuracy = 0, drop_points = 0;
  double margin_points = 0;       // z * standard error of drop_points
  int64_t weight_bytes = 0;       // of the quantized model's initializers
  int evaluations = 0;
  double seconds = 0;
  std::vector<LayerSensitivity> sensitivity;
};

// `ranges` must hold a calibration for every method in {minmax, percentile, mse, kl} that the
// search may try (methods absent from it are not tried).
SearchResult search_plan(const Graph& model, const Dataset& validation, const std::map<std::string, Calibration>& ranges,
                         const SearchOptions& options);

// Bytes of all initializers (weights, scales, biases) of a model.
int64_t initializer_bytes(const Graph& model);
// A value of a run as float: f32 values as they are, s8 values dequantized with the parameters
// of the node that produced them.
Tensor value_as_float(const Graph& model, const class Executor& run, const std::string& value);

}  // namespace lowbit
