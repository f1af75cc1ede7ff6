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

uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
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

}  // namespace

// Calibration data: a dataset directory (IDX images and labels, training and test splits), or an
// .npz / .npy of a model's named inputs (unlabelled: calibration only, no test split).
namespace {
DatasetSplits load_calibration_data(const std::string& path) {
  const bool arrays = path.size() > 4 && (path.ends_with(".npz") || path.ends_with(".npy"));
  if (!arrays) return load_dataset_dir(path);
  DatasetSplits splits;
  splits.train = read_npz_dataset(path);
  return splits;
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
  cmd->add_option("--model", o->model, "Float model (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--data", o->data, "Dataset directory (the first --samples training samples are used), or an .npz of the model's named inputs")->capture_default_str();
  cmd->add_option("--method", o->method, "minmax, moving_average, percentile, mse or kl")->capture_default_str();
  cmd->add_option("--samples", o->samples, "Calibration samples")->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  cmd->add_option("--percentile", o->percentile, "For --method percentile")->capture_default_str();
  cmd->add_option("--out", o->out, "Ranges file to write (JSON)")->required();
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  return [o] {
    if (o->threads > 0) set_num_threads(o->threads);
    Graph model = open_model(o->model);
    if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "'" + o->model + "' is already quantized: calibrate the float model");
    DatasetSplits data = load_calibration_data(o->data);
    CalibrationOptions options;
    options.method = calibration_method_from_name(o->method);
    options.samples = o->samples;
    options.percentile = o->percentile;
    options.communicator = world();  // under mpirun: the batches dealt out to the ranks, the statistics merged
    Calibration c = calibrate(model, data.train, options);
    if (writes()) save_calibration(c, o->out);
    fmt::print("calibrated {} values on {} samples with {}; wrote {}\n", c.ranges.size(), c.samples, c.method, o->out);
    for (const auto& [name, r] : c.ranges) fmt::print("  {:<16} [{:.5f}, {:.5f}]\n", name, r.min, r.max);
    return 0;
  };
}

Command add_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a float model: full, partial or dynamic");
  struct Options {
    double smooth = 0.5;
    std::string model, out, mode = "full", ranges, calib_data, calib_method = "minmax", layers, objective = "size", plan,
                                              plan_out, granularity = "row", activations = "affine", rounding = "nearest", float_layers;
    int bits = 8, weight_bits = 0, threads = 0, keep_float = 1, group_size = 0;
    bool per_tensor = false, per_channel = false, affine = false, symmetric = false, json_out = false, act_order = false;
    double max_drop = -1, time_budget = 60;
    int64_t calib_samples = 1000, validation_samples = 10000;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Float model (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--out", o->out, "Quantized model to write (.lbm)")->required();
  cmd->add_option("--mode", o->mode, "full, partial or dynamic")->capture_default_str()->check(CLI::IsMember({"full", "partial", "dynamic"}));
  cmd->add_option("--bits", o->bits, "Weight bits (activations are 8-bit)")->capture_default_str()->check(CLI::IsMember({8, 6, 4, 3, 2}));
  cmd->add_option("--weight-bits", o->weight_bits, "Same as --bits")->check(CLI::IsMember({8, 6, 4, 3, 2}));
  auto* pc = cmd->add_flag("--per-channel", o->per_channel, "One weight scale per output channel (default)");
  auto* pt = cmd->add_flag("--per-tensor", o->per_tensor, "One weight scale per layer")->excludes(pc);
  cmd->add_option("--group-size", o->group_size,
                  "Block weights: one fp16 scale per this many inputs of each output (Dense layers; 2-4 bits)")
      ->check(CLI::IsMember({32, 64, 128}))
      ->excludes(pt);
  auto* sy = cmd->add_flag("--symmetric", o->symmetric, "Symmetric weights, zero point 0 (default above 3 bits)");
  auto* af = cmd->add_flag("--affine", o->affine, "Affine weights with a zero point (default at 3 bits and below)")->excludes(sy);
  auto* ranges = cmd->add_option("--ranges", o->ranges, "Ranges file from lowbit calibrate");
  auto* smooth = cmd->add_option("--smooth", o->smooth, "SmoothQuant (static modes): move activation outliers after each LayerNorm into the Dense weights reading it, with this strength alpha (e.g. 0.5)")
                     ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--calib-data", o->calib_data,
                  "Dataset directory to calibrate on (and validate, for --max-drop), or an .npz of the model's named inputs (calibration only)");
  cmd->add_option("--calib-method", o->calib_method, "Calibration method when calibrating here")->capture_default_str();
  cmd->add_option("--calib-samples", o->calib_samples, "Calibration samples")->capture_default_str();
  cmd->add_option("--validation-samples", o->validation_samples,
                  "Validation samples (the end of the training split) for --max-drop and sensitivity")->capture_default_str();
  cmd->add_option("--layers", o->layers, "Partial mode: layer names or patterns to quantize, comma-separated");
  cmd->add_option("--float-layers", o->float_layers,
                  "Layers to keep in float, names or patterns, comma-separated (e.g. '*.heads': the attention of transformer blocks)");
  cmd->add_option("--keep-float", o->keep_float, "Partial mode without --layers: keep the N most sensitive layers in float")
      ->capture_default_str();
  auto* max_drop = cmd->add_option("--max-drop", o->max_drop, "Search per-layer rules within this accuracy drop (percentage points)");
  cmd->add_option("--objective", o->objective, "With --max-drop: size or speed")->capture_default_str()->check(CLI::IsMember({"size", "speed"}));
  cmd->add_option("--time-budget", o->time_budget, "With --max-drop: seconds; the best plan so far is returned")->capture_default_str();
  cmd->add_option("--plan", o->plan, "Plan file (JSON) to apply, e.g. one written by an earlier search");
  cmd->add_option("--plan-out", o->plan_out, "Where to write the plan used (default: <out>.plan.json)");
  cmd->add_option("--granularity", o->granularity, "Dynamic mode: activation range per row or per tensor")
      ->capture_default_str()->check(CLI::IsMember({"row", "tensor"}));
  cmd->add_option("--activations", o->activations, "Activation grids: affine (a zero point) or symmetric (zero point 0, for TensorRT)")
      ->capture_default_str()->check(CLI::IsMember({"affine", "symmetric"}));
  auto* rounding = cmd->add_option("--rounding", o->rounding,
                                   "Weight rounding: nearest, or gptq (error feedback on the calibration data; the default at "
                                   "4 bits and below when there is calibration data)")
                       ->check(CLI::IsMember({"nearest", "gptq"}));
  cmd->add_flag("--act-order", o->act_order,
                "GPTQ: round the columns by decreasing Hessian diagonal (the inputs with the most energy first)");
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  (void)ranges;
  return [o, max_drop, sy, af, rounding, smooth] {
    if (o->threads > 0) set_num_threads(o->threads);
    const Graph model = open_model(o->model);
    if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "'" + o->model + "' is already quantized");
    QuantizeOptions q;
    q.mode = quant_mode_from_name(o->mode);
    q.weight_bits = o->weight_bits ? o->weight_bits : o->bits;
    q.per_channel = !o->per_tensor;
    q.group_size = o->group_size;
    q.weight_scheme = o->affine ? QScheme::Affine : QScheme::Symmetric;
    q.dynamic_granularity = o->granularity;
    q.activation_scheme = o->activations == "symmetric" ? QScheme::Symmetric : QScheme::Affine;
    q.calibration_method = o->calib_method;
    q.rounding = o->rounding;
    q.act_order = o->act_order;
    q.calibration_samples = o->calib_samples;
    if (smooth->count() > 0) q.smooth_alpha = o->smooth;
    q.validation_samples = o->validation_samples;
    q.layers = o->layers;
    q.keep_float = o->keep_float;
    q.float_layers = o->float_layers;
    if (max_drop->count() > 0) q.max_drop = o->max_drop;
    q.objective = o->objective;
    q.time_budget_seconds = o->time_budget;
    if (!o->plan.empty()) {
      q.plan = load_plan(o->plan);
      check_plan_layers(model, *q.plan);  // before any data is loaded
    }
    q.log = [](const std::string& line) { fmt::print("search: {}\n", line); };
    // Defaults by bit width for what was not given (not with a plan or a search, which decide per layer).
    const bool has_data = (q.mode != QuantMode::Dynamic && o->ranges.empty()) || !o->calib_data.empty();
    const AppliedDefaults applied = apply_bit_width_defaults(q, sy->count() + af->count() > 0, rounding->count() > 0, has_data);
    if (applied.scheme || applied.rounding)
      fmt::print("defaults for {}-bit weights: {}{}{}\n", q.weight_bits,
                 applied.scheme ? std::string(name_of(q.weight_scheme)) + " weights (--symmetric to change)" : "",
                 applied.scheme && applied.rounding ? ", " : "",
                 applied.rounding ? q.rounding + " rounding (--rounding nearest to change)" : "");
    if (!q.plan && !q.max_drop && q.weight_bits == 2)
      fmt::print("note: 2-bit weights lose much accuracy after training; lowbit qat --bits 2 or lowbit distill --bits 2 "
                 "train them back\n");
    if (!o->ranges.empty()) {
      Calibration c = load_calibration(o->ranges);
      q.ranges[c.method.empty() ? "minmax" : c.method] = c;
    }
    // Data: calibration (static modes without ranges), validation (search, sensitivity).
    std::optional<DatasetSplits> data;
    if (quantize_needs_data(q) || !o->calib_data.empty())
      data = load_calibration_data(o->calib_data.empty() ? default_dataset_dir() : o->calib_data);
    if (data) {
      q.calibration_data = &data->train;
      if (data->test.size() > 0) q.test_data = &data->test;  // the accuracy of both models, reported below
    }

    const QuantizeResult r = quantize(model, q);
    json report = {{"command", "quantize"}, {"model", o->model}, {"out", o->out}, {"mode", o->mode}};
    if (r.search) {
      const SearchResult& s = *r.search;
      fmt::print("\nper-layer sensitivity (int8, validation split of {} samples):\n", r.validation_samples);
      print_sensitivity(r.sensitivity);
      fmt::print("\nsearch: float accuracy {:.4f}, plan accuracy {:.4f}, drop {:.2f} +- {:.2f} points (max {:.2f}), {} evaluations in {:.1f} s{}\n",
                 s.float_accuracy, s.accuracy, s.drop_points, s.margin_points, o->max_drop, s.evaluations, s.seconds,
                 s.timed_out ? " (time budget reached)" : "");
      report["search"] = {{"met", s.met}, {"timed_out", s.timed_out}, {"validation_float_accuracy", s.float_accuracy},
                          {"validation_accuracy", s.accuracy}, {"validation_drop_points", s.drop_points}, {"validation_margin_points", s.margin_points},
                          {"evaluations", s.evaluations}, {"seconds", s.seconds}, {"sensitivity", sensitivity_json(s.sensitivity)}};
      if (!r.met) {
        std::fflush(stdout);
        std::fprintf(stderr, "lowbit: warning: no plan met --max-drop %.2f (best: %.2f points); writing the best plan found\n",
                     o->max_drop, s.drop_points);
      }
    } else if (!r.sensitivity.empty()) {
      fmt::print("per-layer sensitivity ({}-bit weights, validation split of {} samples):\n", r.plan.defaults.weight_bits,
                 r.validation_samples);
      print_sensitivity(r.sensitivity);
      report["sensitivity"] = sensitivity_json(r.sensitivity);
    }
    if (q.smooth_alpha) {
      fmt::print("smoothed (alpha {}) the outputs of {} LayerNorm(s) into the Dense layers reading them\n", *q.smooth_alpha,
                 r.smoothed_layers.size());
      report["smoothed_layers"] = r.smoothed_layers;
    }
    const QuantPlan& plan = r.plan;
    save_model(r.model, o->out);
    const std::string plan_path = o->plan_out.empty() ? o->out + ".plan.json" : o->plan_out;
    save_plan(plan, plan_path);
    fmt::print("quantized {} ({}) -> {} ({} bytes, {:.1f}% of {} bytes); plan written to {}\n", o->model, name_of(plan.mode),
               o->out, file_bytes(o->out), 100.0 * file_bytes(o->out) / std::max<uint64_t>(file_bytes(o->model), 1),
               file_bytes(o->model), plan_path);
    for (const auto& layer : quantizable_layers(model)) {
      const LayerRule rule = plan.rule_for(layer);
      const Node& node = *std::find_if(model.nodes.begin(), model.nodes.end(), [&](const Node& n) { return n.name == layer; });
      if (!traits_of(node).has_weights()) {  // attention: its operands, or float
        fmt::print("  {:<12} {}\n", layer,
                   quantizes(node, plan) ? fmt::format("int8 q, k, v and probabilities, calibration {}", rule.calibration) : "float");
        continue;
      }
      fmt::print("  {:<12} {}\n", layer,
                 rule.quantize ? fmt::format("{}-bit weights {} {}{}, calibration {}", rule.weight_bits,
                                             rule.group_size ? fmt::format("in blocks of {}", rule.group_size)
                                                             : rule.per_channel ? "per-channel" : "per-tensor",
                                             name_of(rule.weight_scheme),
                                             rule.rounding == "nearest" ? "" : ", " + rule.rounding + " rounding",
                                             plan.mode == QuantMode::Dynamic ? "dynamic" : rule.calibration)
                               : std::string("float"));
    }
    if (r.test) {
      const EvalReport &f = *r.float_test, &t = *r.test;
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
    return r.met ? 0 : 3;  // 3: written, but no plan met --max-drop
  };
}

Command add_dequantize(CLI::App& app) {
  auto* cmd = app.add_subcommand("dequantize", "Turn a quantized model back into a float model");
  auto model = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Quantized model (.lbm)")->required();
  cmd->add_option("--out", *out, "Float model to write (.lbm)")->required();
  return [model, out] {
    Graph q = open_model(*model);
    if (!is_quantized(q)) throw Error(ErrorKind::InvalidArgument, "'" + *model + "' is not quantized");
    Graph f = dequantize_model(q);
    save_model(f, *out);
    fmt::print("dequantized {} -> {} ({} bytes)\n", *model, *out, file_bytes(*out));
    return 0;
  };
}

Command add_compare(CLI::App& app) {
  auto* cmd = app.add_subcommand("compare", "Compare two models: accuracy, agreement, per-layer error, size, speed");
  struct Options {
    std::string a, b, data = default_dataset_dir(), html;
    int threads = 0;
    bool json_out = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->a, "First model (.lbm or .onnx)")->required();
  cmd->add_option("--against", o->b, "Second model (.lbm or .onnx)")->required();
  cmd->add_option("--data", o->data, "Dataset directory (test split)")->capture_default_str();
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  cmd->add_option("--html", o->html, "Also write the comparison as a self-contained HTML page (lowbit sweep's report for one variant)");
  return [o] {
    if (o->threads > 0) set_num_threads(o->threads);
    const Graph a = open_model(o->a), b = open_model(o->b);
    const DatasetSplits data = load_dataset_dir(o->data);
    const CompareResult r = compare(a, b, data.test);
    if (!o->html.empty()) write_sweep_report(compare_sweep(a, b, data, r, o->a, o->b, o->data), o->html);
    json layers = json::array();
    fmt::print("{:<12} {:>9} {:>9}  {}\n", "layer", "SQNR dB", "cosine", "ops");
    for (const auto& l : r.layers) {
      fmt::print("{:<12} {:>9.1f} {:>9.5f}  {} / {}\n", l.layer, l.error.sqnr_db, l.error.cosine, l.op, l.against_op);
      layers.push_back({{"layer", l.layer}, {"sqnr_db", std::isfinite(l.error.sqnr_db) ? l.error.sqnr_db : 999.0},
                        {"cosine", l.error.cosine}, {"max_abs_error", l.error.max_abs}, {"op", l.op}, {"against_op", l.against_op}});
    }
    const Speed& ta = r.model_speed;
    const Speed& tb = r.against_speed;
    fmt::print("\n{:<10} {:>10} {:>12} {:>16} {:>22}\n", "model", "accuracy", "file bytes", "batch-1 latency", "batch-256 images/s");
    fmt::print("{:<10} {:>10.4f} {:>12} {:>13.1f} us {:>22.0f}\n", "model", r.model_accuracy, file_bytes(o->a), ta.batch1_latency_us,
               ta.batch256_images_per_second);
    fmt::print("{:<10} {:>10.4f} {:>12} {:>13.1f} us {:>22.0f}\n", "against", r.against_accuracy, file_bytes(o->b), tb.batch1_latency_us,
               tb.batch256_images_per_second);
    fmt::print("prediction agreement {:.4f}, accuracy difference {:.2f} points, {} thread(s)\n", r.agreement,
               (r.model_accuracy - r.against_accuracy) * 100, num_threads());
    if (!o->html.empty()) fmt::print("wrote {}\n", o->html);
    if (o->json_out) {
      json j = {{"command", "compare"}, {"model", o->a}, {"against", o->b}, {"threads", num_threads()},
                {"model_accuracy", r.model_accuracy}, {"against_accuracy", r.against_accuracy}, {"agreement", r.agreement},
                {"model_file_bytes", file_bytes(o->a)}, {"against_file_bytes", file_bytes(o->b)},
                {"model_batch1_latency_us", ta.batch1_latency_us}, {"against_batch1_latency_us", tb.batch1_latency_us},
                {"model_batch256_images_per_second", ta.batch256_images_per_second},
                {"against_batch256_images_per_second", tb.batch256_images_per_second}, {"layers", layers}};
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

}  // namespace lowbit::cli
