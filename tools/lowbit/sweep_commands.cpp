// lowbit sweep: quantize one model in every requested way, measure each variant, write the
// figures (JSON) and one HTML report (lowbit/sweep.h).
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "lowbit/lowbit.h"

namespace lowbit::cli {
namespace {

std::vector<std::string> split_list(const std::string& text, const char* option) {
  std::vector<std::string> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    std::string item = text.substr(begin, end - begin);
    if (item.empty()) throw Error(ErrorKind::InvalidArgument, std::string(option) + ": an empty entry in '" + text + "'");
    out.push_back(item);
    begin = end + 1;
  }
  return out;
}

// "m:ss" (or "h:mm:ss").
std::string clock_text(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) : fmt::format("{}:{:02}", s / 60, s % 60);
}

}  // namespace

Command add_sweep(CLI::App& app) {
  auto* cmd = app.add_subcommand("sweep", "Quantize a model in many ways, measure every variant, and draw the trade-off (HTML report)");
  struct Options {
    std::string model, data = default_dataset_dir(), calib_data, out, bits = "8,6,4,3,2", modes = "full,dynamic",
                                                             roundings = "nearest,gptq", granularities = "per-channel", max_drops;
    double time_budget = 0, search_time_budget = 30;
    int64_t calib_samples = 1000, validation_samples = 5000;
    int threads = 0;
    bool json_out = false, no_speed = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Float model (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--data", o->data, "Dataset directory: test split measured, training split for calibration and validation")
      ->capture_default_str();
  cmd->add_option("--calib-data", o->calib_data, "Another dataset directory to calibrate and validate on (default: --data)");
  cmd->add_option("--out", o->out, "Folder for the variants (<name>.lbm), their figures (variants/*.json) and report.html")->required();
  cmd->add_option("--bits", o->bits, "Weight bits to try, comma-separated (8, 6, 4, 3, 2)")->capture_default_str();
  cmd->add_option("--modes", o->modes, "Modes to try: full, dynamic, partial")->capture_default_str();
  cmd->add_option("--rounding", o->roundings, "Weight rounding to try: nearest, gptq")->capture_default_str();
  cmd->add_option("--granularity", o->granularities, "Weight scales to try: per-channel, per-tensor, block32, block64, block128")
      ->capture_default_str();
  cmd->add_option("--max-drop", o->max_drops,
                  "Also accuracy-driven variants (lowbit quantize --max-drop) within these drops in points, comma-separated");
  cmd->add_option("--search-time-budget", o->search_time_budget, "Seconds per accuracy-driven search")->capture_default_str();
  cmd->add_option("--time-budget", o->time_budget,
                  "Start no new variant after this many seconds (0: none); a later sweep into --out finishes the rest")
      ->capture_default_str();
  cmd->add_option("--calib-samples", o->calib_samples, "Calibration samples")->capture_default_str();
  cmd->add_option("--validation-samples", o->validation_samples, "Validation samples (the end of the training split)")->capture_default_str();
  cmd->add_flag("--no-speed", o->no_speed, "Do not time the variants (latency and throughput stay 0)");
  cmd->add_option("--threads", o->threads, "Worker threads (default: all cores, or LOWBIT_NUM_THREADS)")->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_out, "End with one JSON line of every figure (the report's numbers)");
  return [o] {
    if (o->threads > 0) set_num_threads(o->threads);
    const Graph model = open_model(o->model);
    const std::string data_path = o->calib_data.empty() ? o->data : o->calib_data;
    DatasetSplits data = load_dataset_dir(o->data);
    if (!o->calib_data.empty()) data.train = load_dataset_dir(o->calib_data).train;
    SweepOptions s;
    s.bits.clear();
    for (const auto& b : split_list(o->bits, "--bits")) {
      try {
        s.bits.push_back(std::stoi(b));
      } catch (const std::exception&) {
        throw Error(ErrorKind::InvalidArgument, "--bits: '" + b + "' is not a number");
      }
    }
    s.modes.clear();
    for (const auto& m : split_list(o->modes, "--modes")) s.modes.push_back(quant_mode_from_name(m));
    s.roundings = split_list(o->roundings, "--rounding");
    s.granularities = split_list(o->granularities, "--granularity");
    if (!o->max_drops.empty())
      for (const auto& d : split_list(o->max_drops, "--max-drop")) {
        try {
          s.max_drops.push_back(std::stod(d));
        } catch (const std::exception&) {
          throw Error(ErrorKind::InvalidArgument, "--max-drop: '" + d + "' is not a number");
        }
      }
    s.out_dir = o->out;
    s.model_path = o->model;
    s.data_path = data_path;
    s.calibration_samples = o->calib_samples;
    s.validation_samples = o->validation_samples;
    s.time_budget_seconds = o->time_budget;
    s.search_time_budget_seconds = o->search_time_budget;
    s.measure_speed = !o->no_speed;
    s.communicator = world();  // under mpirun: the variants dealt out to the ranks
    // Progress on stderr (rank 0's variants under mpirun): a bar redrawn in place on a terminal, one line per variant otherwise.
    const bool tty = isatty(fileno(stderr));
    const auto start = std::chrono::steady_clock::now();
    s.progress = [tty, start](size_t done, size_t total, const std::string& name) {
      if (!writes()) return;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const int width = 24, filled = total ? static_cast<int>(width * done / total) : width;
      const std::string eta = done > 0 && done < total ? ", ETA " + clock_text(elapsed / double(done) * double(total - done)) : "";
      const std::string line = fmt::format("[{}{}] {}/{} variants, {} elapsed{}{}", std::string(filled, '#'), std::string(width - filled, '.'),
                                           done, total, clock_text(elapsed), eta, name.empty() ? "" : "  " + name);
      std::fprintf(stderr, tty ? "\r%-110s" : "%s\n", line.c_str());
      if (tty && done == total) std::fputc('\n', stderr);
      std::fflush(stderr);
    };
    const SweepResult r = run_sweep(model, data, s);
    const std::string report = (std::filesystem::path(o->out) / "report.html").string();
    if (writes()) write_sweep_report(r, report);
    fmt::print("{:<36} {:>9} {:>9} {:>11} {:>8} {:>12} {:>12}  {}\n", "variant", "test acc", "drop pts", "size bytes", "bits/w",
               "latency us", "images/s", "");
    fmt::print("{:<36} {:>9.4f} {:>9} {:>11} {:>8} {:>12.1f} {:>12.0f}\n", "float", r.float_test_accuracy, "", r.float_file_bytes, "32",
               r.float_batch1_latency_us, r.float_batch256_images_per_second);
    for (const auto& v : r.variants) {
      if (!v.measured) {
        fmt::print("{:<36} {}\n", v.name, v.skipped.empty() ? "not measured (time budget)" : "skipped: " + v.skipped);
        continue;
      }
      fmt::print("{:<36} {:>9.4f} {:>9.2f} {:>11} {:>8.2f} {:>12.1f} {:>12.0f}  {}{}\n", v.name, v.test_accuracy, v.drop_points, v.file_bytes,
                 v.bits_per_weight, v.batch1_latency_us, v.batch256_images_per_second, v.on_front ? "front" : "",
                 v.reused ? (v.on_front ? ", reused" : "reused") : "");
    }
    size_t reused = 0, measured = 0;
    for (const auto& v : r.variants) reused += v.reused, measured += v.measured && !v.reused;
    fmt::print("{} variants measured now, {} reused from {}; report: {}{}\n", measured, reused, o->out, report,
               r.complete ? "" : " (time budget reached: run the same command again to finish)");
    if (o->json_out) std::puts(sweep_json(r).c_str());
    return 0;
  };
}

}  // namespace lowbit::cli
