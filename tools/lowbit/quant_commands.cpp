// lowbit calibrate | quantize | dequantize | compare.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "commands.h"
#include "lowbit/lowbit.h"

namespace lowbit::cli {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

// The validation split for accuracy-driven decisions: the last `count` training samples, never
// the test set.
Dataset validation_split(const Dataset& train, int64_t count) {
  return train.slice(train.size() - std::min(count, train.size()), train.size());
}

std::map<std::string, Calibration> calibrate_methods(const Graph& model, const Dataset& data, int64_t samples,
                                                     const std::vector<std::string>& methods) {
  std::map<std::string, Calibration> out;
  for (const auto& m : methods) {
    CalibrationOptions o;
    o.method = calibration_method_from_name(m);
    o.samples = samples;
    out[m] = calibrate(model, data, o);
  }
  return out;
}

void print_sensitivity(const std::vector<LayerSensitivity>& rows) {
  fmt::print("{:<12} {:>10} {:>10} {:>11} {:>9} {:>8}\n", "layer", "params", "accuracy", "drop (pts)", "SQNR dB", "cosine");
  for (const auto& s : rows)
    fmt::print("{:<12} {:>10} {:>10.4f} {:>11.2f} {:>9.1f} {:>8.5f}\n", s.layer, s.parameters, s.accuracy, s.drop_points,
               s.sqnr_db, s.cosine);
}

json sensitivity_json(const std::vector<LayerSensitivity>& rows) {
  json a = json::array();
  for (const auto& s : rows)
    a.push_back({{"layer", s.layer}, {"parameters", s.parameters}, {"accuracy", s.accuracy}, {"drop_points", s.drop_points},
                 {"sqnr_db", s.sqnr_db}, {"cosine", s.cosine}});
  return a;
}

struct Timing {
  double batch1_latency_us = 0, batch256_images_per_second = 0;
};

Timing measure_speed(const Graph& model, const Dataset& data) {
  Executor run(model);
  Tensor& input = run.input(model.inputs.at(0).name);
  const float scale = input_scale(model);
  Timing t;
  std::vector<uint32_t> one = {0};
  gather_batch(data, one, scale, input);
  std::vector<double> samples;
  for (int i = 0; i < 300; ++i) {
    auto s = Clock::now();
    run.forward();
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  t.batch1_latency_us = samples[samples.size() / 2];
  std::vector<uint32_t> batch(static_cast<size_t>(std::min<int64_t>(256, data.size())));
  std::iota(batch.begin(), batch.end(), 0u);
  gather_batch(data, batch, scale, input);
  run.forward();
  double best = 1e30;  // best of 15 x 20 batches: a short stall from elsewhere on the machine does not count
  for (int rep = 0; rep < 15; ++rep) {
    auto s = Clock::now();
    for (int i = 0; i < 20; ++i) run.forward();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - s).count() / 20);
  }
  t.batch256_images_per_second = batch.size() / best;
  return t;
}

}  // namespace

Command add_calibrate(CLI::App& app) {
  auto* cmd = app.add_subcommand("calibrate", "Observe activation ranges on calibration data (for static quantization)");
  struct Options {
    std::string model, data = default_dataset_dir(), method = "minmax", out;
    int64_t samples = 1000;
    double percentile = 99.99;
    int threads = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Float model (.lbm)")->required();
  cmd->add_option("--data", o->data, "Dataset directory; the first --samples training samples are used")->capture_default_str();
  cmd->add_option("--method", o->method, "minmax, moving_average, percentile, mse or kl")->capture_default_str();
  cmd->add_option("--samples", o->samples, "Calibration samples")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--percentile", o->percentile, "For --method percentile")->capture_default_str();
  cmd->add_option("--out", o->out, "Ranges file to write (JSON)")->required();
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  return [o] {
    if (o->threads > 0) set_num_threads(o->threads);
    Graph model = load_model(o->model);
    if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "'" + o->model + "' is already quantized: calibrate the float model");
    DatasetSplits data = load_dataset_dir(o->data);
    CalibrationOptions options;
    options.method = calibration_method_from_name(o->method);
    options.samples = o->samples;
    options.percentile = o->percentile;
    Calibration c = calibrate(model, data.train, options);
    save_calibration(c, o->out);
    fmt::print("calibrated {} values on {} samples with {}; wrote {}\n", c.ranges.size(), c.samples, c.method, o->out);
    for (const auto& [name, r] : c.ranges) fmt::print("  {:<16} [{:.5f}, {:.5f}]\n", name, r.min, r.max);
  };
}

Command add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a float model: full, partial or dynamic");
  struct Options {
    std::string model, out, mode = "full", ranges, calib_data, calib_method = "minmax", layers, objective = "size", plan,
                                              plan_out, granularity = "row";
    int bits = 8, weight_bits = 0, threads = 0, keep_float = 1;
    bool per_tensor = false, per_channel = false, affine = false, symmetric = false, json_out = false;
    double max_drop = -1, time_budget = 60;
    int64_t calib_samples = 1000, validation_samples = 10000;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Float model (.lbm)")->required();
  cmd->add_option("--out", o->out, "Quantized model to write (.lbm)")->required();
  cmd->add_option("--mode", o->mode, "full, partial or dynamic")->capture_default_str()->check(CLI::IsMember({"full", "partial", "dynamic"}));
  cmd->add_option("--bits", o->bits, "Weight bits (activations are 8-bit)")->capture_default_str()->check(CLI::IsMember({8, 6, 4, 3, 2}));
  cmd->add_option("--weight-bits", o->weight_bits, "Same as --bits")->check(CLI::IsMember({8, 6, 4, 3, 2}));
  auto* pc = cmd->add_flag("--per-channel", o->per_channel, "One weight scale per output channel (default)");
  cmd->add_flag("--per-tensor", o->per_tensor, "One weight scale per layer")->excludes(pc);
  auto* sy = cmd->add_flag("--symmetric", o->symmetric, "Symmetric weights, zero point 0 (default)");
  cmd->add_flag("--affine", o->affine, "Affine weights with a zero point")->excludes(sy);
  auto* ranges = cmd->add_option("--ranges", o->ranges, "Ranges file from lowbit calibrate");
  cmd->add_option("--calib-data", o->calib_data, "Dataset directory to calibrate on (and validate, for --max-drop)");
  cmd->add_option("--calib-method", o->calib_method, "Calibration method when calibrating here")->capture_default_str();
  cmd->add_option("--calib-samples", o->calib_samples, "Calibration samples")->capture_default_str();
  cmd->add_option("--validation-samples", o->validation_samples,
                  "Validation samples (the end of the training split) for --max-drop and sensitivity")->capture_default_str();
  cmd->add_option("--layers", o->layers, "Partial mode: layer names or patterns to quantize, comma-separated");
  cmd->add_option("--keep-float", o->keep_float, "Partial mode without --layers: keep the N most sensitive layers in float")
      ->capture_default_str();
  auto* max_drop = cmd->add_option("--max-drop", o->max_drop, "Search per-layer rules within this accuracy drop (percentage points)");
  cmd->add_option("--objective", o->objective, "With --max-drop: size or speed")->capture_default_str()->check(CLI::IsMember({"size", "speed"}));
  cmd->add_option("--time-budget", o->time_budget, "With --max-drop: seconds; the best plan so far is returned")->capture_default_str();
  cmd->add_option("--plan", o->plan, "Plan file (JSON) to apply, e.g. one written by an earlier search");
  cmd->add_option("--plan-out", o->plan_out, "Where to write the plan used (default: <out>.plan.json)");
  cmd->add_option("--granularity", o->granularity, "Dynamic mode: activation range per row or per tensor")
      ->capture_default_str()->check(CLI::IsMember({"row", "tensor"}));
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  (void)ranges;
  return [o, max_drop] {
    if (o->threads > 0) set_num_threads(o->threads);
    Graph model = load_model(o->model);
    if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "'" + o->model + "' is already quantized");
    const QuantMode mode = quant_mode_from_name(o->mode);
    const bool searching = max_drop->count() > 0;
    json report = {{"command", "quantize"}, {"model", o->model}, {"out", o->out}, {"mode", o->mode}};

    // Data: calibration (full/partial) and validation (search, sensitivity).
    const bool needs_validation = searching || (mode == QuantMode::Partial && o->layers.empty() && o->plan.empty());
    std::optional<DatasetSplits> data;
    if ((mode != QuantMode::Dynamic && o->ranges.empty()) || needs_validation || !o->calib_data.empty())
      data = load_dataset_dir(o->calib_data.empty() ? default_dataset_dir() : o->calib_data);
    std::map<std::string, Calibration> ranges;
    if (!o->ranges.empty()) {
      Calibration c = load_calibration(o->ranges);
      ranges[c.method.empty() ? "minmax" : c.method] = c;
    }
    if (mode != QuantMode::Dynamic && ranges.empty()) {
      std::vector<std::string> methods = {o->calib_method};
      if (searching) methods = {"minmax", "percentile", "mse", "kl"};
      ranges = calibrate_methods(model, data->train, o->calib_samples, methods);
    }
    const std::string default_method = ranges.empty() ? "minmax" : (ranges.count(o->calib_method) ? o->calib_method : ranges.begin()->first);

    QuantPlan plan;
    int exit_code = 0;
    if (!o->plan.empty()) {
      plan = load_plan(o->plan);
    } else if (searching) {
      SearchOptions s;
      s.max_drop_points = o->max_drop;
      s.objective = o->objective;
      s.time_budget_seconds = o->time_budget;
      s.mode = mode == QuantMode::Dynamic ? QuantMode::Dynamic : QuantMode::Full;
      s.log = [](const std::string& line) { fmt::print("search: {}\n", line); };
      Dataset validation = validation_split(data->train, o->validation_samples);
      SearchResult r = search_plan(model, validation, ranges, s);
      plan = r.plan;
      fmt::print("\nper-layer sensitivity (int8, validation split of {} samples):\n", validation.size());
      print_sensitivity(r.sensitivity);
      fmt::print("\nsearch: float accuracy {:.4f}, plan accuracy {:.4f}, drop {:.2f} +- {:.2f} points (max {:.2f}), {} evaluations in {:.1f} s{}\n",
                 r.float_accuracy, r.accuracy, r.drop_points, r.margin_points, o->max_drop, r.evaluations, r.seconds,
                 r.timed_out ? " (time budget reached)" : "");
      report["search"] = {{"met", r.met}, {"timed_out", r.timed_out}, {"validation_float_accuracy", r.float_accuracy},
                          {"validation_accuracy", r.accuracy}, {"validation_drop_points", r.drop_points}, {"validation_margin_points", r.margin_points},
                          {"evaluations", r.evaluations}, {"seconds", r.seconds}, {"sensitivity", sensitivity_json(r.sensitivity)}};
      if (!r.met) {
        std::fflush(stdout);
        std::fprintf(stderr, "lowbit: warning: no plan met --max-drop %.2f (best: %.2f points); writing the best plan found\n",
                     o->max_drop, r.drop_points);
        exit_code = 3;
      }
    } else {
      plan.mode = mode;
      plan.defaults.weight_bits = o->weight_bits ? o->weight_bits : o->bits;
      plan.defaults.per_channel = !o->per_tensor;
      plan.defaults.weight_scheme = o->affine ? QScheme::Affine : QScheme::Symmetric;
      plan.defaults.calibration = default_method;
      plan.dynamic_granularity = o->granularity;
      if (mode == QuantMode::Partial) {
        std::vector<std::string> chosen;
        if (!o->layers.empty()) {
          chosen = select_layers(model, o->layers);
        } else {
          // Sensitivity analysis picks the layers: the --keep-float most sensitive stay float.
          Dataset validation = validation_split(data->train, o->validation_samples);
          LayerRule rule = plan.defaults;
          auto sens = analyze_sensitivity(model, validation, rule, QuantMode::Full, ranges);
          fmt::print("per-layer sensitivity ({}-bit weights, validation split of {} samples):\n", rule.weight_bits, validation.size());
          print_sensitivity(sens);
          report["sensitivity"] = sensitivity_json(sens);
          std::sort(sens.begin(), sens.end(), [](const auto& a, const auto& b) { return a.drop_points < b.drop_points; });
          for (size_t i = 0; i + std::max(o->keep_float, 0) < sens.size(); ++i) chosen.push_back(sens[i].layer);
        }
        for (const auto& l : chosen) {
          plan.layers[l] = plan.defaults;
          plan.layers[l].quantize = true;
        }
      }
    }
    Graph q = quantize_model(model, plan, ranges);
    save_model(q, o->out);
    const std::string plan_path = o->plan_out.empty() ? o->out + ".plan.json" : o->plan_out;
    save_plan(plan, plan_path);
    fmt::print("quantized {} ({}) -> {} ({} bytes, {:.1f}% of {} bytes); plan written to {}\n", o->model, name_of(plan.mode),
               o->out, file_bytes(o->out), 100.0 * file_bytes(o->out) / std::max<uint64_t>(file_bytes(o->model), 1),
               file_bytes(o->model), plan_path);
    for (const auto& layer : quantizable_layers(model)) {
      const LayerRule r = plan.rule_for(layer);
      fmt::print("  {:<12} {}\n", layer,
                 r.quantize ? fmt::format("{}-bit weights {} {}, calibration {}", r.weight_bits,
                                          r.per_channel ? "per-channel" : "per-tensor", name_of(r.weight_scheme),
                                          plan.mode == QuantMode::Dynamic ? "dynamic" : r.calibration)
                            : std::string("float"));
    }
    if (data) {
      EvalReport f = evaluate(model, data->test), t = evaluate(q, data->test);
      fmt::print("test accuracy: float {:.4f}, quantized {:.4f}, drop {:.2f} points\n", f.accuracy, t.accuracy,
                 (f.accuracy - t.accuracy) * 100);
      report["float_test_accuracy"] = f.accuracy;
      report["test_accuracy"] = t.accuracy;
      report["drop_points"] = (f.accuracy - t.accuracy) * 100;
    }
    report["plan"] = plan_path;
    report["file_bytes"] = file_bytes(o->out);
    report["float_file_bytes"] = file_bytes(o->model);
    if (o->json_out) std::puts(report.dump().c_str());
    if (exit_code) {
      std::fflush(stdout);
      std::exit(exit_code);
    }
  };
}

Command add_dequantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("dequantize", "Turn a quantized model back into a float model");
  auto model = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Quantized model (.lbm)")->required();
  cmd->add_option("--out", *out, "Float model to write (.lbm)")->required();
  return [model, out] {
    Graph q = load_model(*model);
    if (!is_quantized(q)) throw Error(ErrorKind::InvalidArgument, "'" + *model + "' is not quantized");
    Graph f = dequantize_model(q);
    save_model(f, *out);
    fmt::print("dequantized {} -> {} ({} bytes)\n", *model, *out, file_bytes(*out));
  };
}

Command add_compare(CLI::App& app) {
  auto* cmd = app.add_subcommand("compare", "Compare two models: accuracy, agreement, per-layer error, size, speed");
  struct Options {
    std::string a, b, data = default_dataset_dir();
    int threads = 0;
    bool json_out = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->a, "First model (.lbm)")->required();
  cmd->add_option("--against", o->b, "Second model (.lbm)")->required();
  cmd->add_option("--data", o->data, "Dataset directory (test split)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  return [o] {
    if (o->threads > 0) set_num_threads(o->threads);
    Graph a = load_model(o->a), b = load_model(o->b);
    DatasetSplits data = load_dataset_dir(o->data);
    // Predictions of both on the whole test set, batch by batch.
    Executor ra(a), rb(b);
    const std::string la = logits_value(a), lb = logits_value(b);
    int64_t agree = 0, correct_a = 0, correct_b = 0;
    std::vector<uint32_t> idx;
    for (int64_t begin = 0; begin < data.test.size(); begin += 256) {
      idx.resize(static_cast<size_t>(std::min<int64_t>(256, data.test.size() - begin)));
      std::iota(idx.begin(), idx.end(), static_cast<uint32_t>(begin));
      gather_batch(data.test, idx, input_scale(a), ra.input(a.inputs.at(0).name));
      gather_batch(data.test, idx, input_scale(b), rb.input(b.inputs.at(0).name));
      ra.forward();
      rb.forward();
      const Tensor &xa = ra.value(la), &xb = rb.value(lb);
      const int64_t ca = xa.dim(1), cb = xb.dim(1);
      for (size_t i = 0; i < idx.size(); ++i) {
        const int64_t pa = std::max_element(xa.data<float>() + i * ca, xa.data<float>() + (i + 1) * ca) - (xa.data<float>() + i * ca);
        const int64_t pb = std::max_element(xb.data<float>() + i * cb, xb.data<float>() + (i + 1) * cb) - (xb.data<float>() + i * cb);
        agree += pa == pb;
        correct_a += pa == data.test.labels[begin + i];
        correct_b += pb == data.test.labels[begin + i];
      }
    }
    const double n = static_cast<double>(data.test.size());
    // Per-layer error on the first 256 test samples, for layers present in both models.
    idx.resize(static_cast<size_t>(std::min<int64_t>(256, data.test.size())));
    std::iota(idx.begin(), idx.end(), 0u);
    gather_batch(data.test, idx, input_scale(a), ra.input(a.inputs.at(0).name));
    gather_batch(data.test, idx, input_scale(b), rb.input(b.inputs.at(0).name));
    ra.forward();
    rb.forward();
    json layers = json::array();
    fmt::print("{:<12} {:>9} {:>9}  {}\n", "layer", "SQNR dB", "cosine", "ops");
    for (const auto& node : a.nodes) {
      const int pb = b.producer(node.outputs[0]);
      if (pb < 0 || traits_of(node).layout_only) continue;
      const ErrorMetrics m = compare_tensors(value_as_float(a, ra, node.outputs[0]), value_as_float(b, rb, node.outputs[0]));
      fmt::print("{:<12} {:>9.1f} {:>9.5f}  {} / {}\n", node.name, m.sqnr_db, m.cosine, node.op, b.nodes[pb].op);
      layers.push_back({{"layer", node.name}, {"sqnr_db", std::isfinite(m.sqnr_db) ? m.sqnr_db : 999.0}, {"cosine", m.cosine},
                        {"max_abs_error", m.max_abs}, {"op", node.op}, {"against_op", b.nodes[pb].op}});
    }
    const Timing ta = measure_speed(a, data.test), tb = measure_speed(b, data.test);
    fmt::print("\n{:<10} {:>10} {:>12} {:>16} {:>22}\n", "model", "accuracy", "file bytes", "batch-1 latency", "batch-256 images/s");
    fmt::print("{:<10} {:>10.4f} {:>12} {:>13.1f} us {:>22.0f}\n", "model", correct_a / n, file_bytes(o->a), ta.batch1_latency_us,
               ta.batch256_images_per_second);
    fmt::print("{:<10} {:>10.4f} {:>12} {:>13.1f} us {:>22.0f}\n", "against", correct_b / n, file_bytes(o->b), tb.batch1_latency_us,
               tb.batch256_images_per_second);
    fmt::print("prediction agreement {:.4f}, accuracy difference {:.2f} points, {} thread(s)\n", agree / n,
               (correct_a - correct_b) / n * 100, num_threads());
    if (o->json_out) {
      json j = {{"command", "compare"}, {"model", o->a}, {"against", o->b}, {"threads", num_threads()},
                {"model_accuracy", correct_a / n}, {"against_accuracy", correct_b / n}, {"agreement", agree / n},
                {"model_file_bytes", file_bytes(o->a)}, {"against_file_bytes", file_bytes(o->b)},
                {"model_batch1_latency_us", ta.batch1_latency_us}, {"against_batch1_latency_us", tb.batch1_latency_us},
                {"model_batch256_images_per_second", ta.batch256_images_per_second},
                {"against_batch256_images_per_second", tb.batch256_images_per_second}, {"layers", layers}};
      std::puts(j.dump().c_str());
    }
  };
}

}  // namespace lowbit::cli
