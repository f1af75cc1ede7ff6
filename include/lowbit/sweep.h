// lowbit/sweep.h - the size / speed / accuracy trade-off of one model: quantize it in every
// requested way, measure each variant, and draw the result (`lowbit sweep`, `lowbit compare --html`).
//
//   lowbit::SweepOptions o;
//   o.bits = {8, 4, 2};
//   o.modes = {lowbit::QuantMode::Full, lowbit::QuantMode::Dynamic};
//   o.out_dir = "sweep";                                    // variants, their figures, report.html
//   lowbit::SweepResult r = lowbit::run_sweep(model, data, o);  // data: a dataset's splits
//   for (const lowbit::SweepVariant& v : r.variants)
//     if (v.measured) { /* v.name, v.test_accuracy, v.file_bytes, v.batch1_latency_us, ... */ }
//   lowbit::write_sweep_report(r, "sweep/report.html");
//
// Each variant is an ordinary model file (DIR/<name>.lbm) and a JSON file of its figures
// (DIR/variants/<name>.json) keyed by the model, the data and the settings: a later sweep into the
// same folder reuses every variant whose key matches and measures only the others, so an
// interrupted sweep resumes where it stopped. The report draws exactly the figures of the JSON
// (sweep_json), and nothing in it depends on the run but the timing figures (latency, throughput,
// seconds), which it marks with data-timing.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/dataset.h"
#include "lowbit/graph.h"
#include "lowbit/quantize.h"
#include "lowbit/train.h"

namespace lowbit {

struct SweepOptions {
  std::vector<int> bits = {8, 6, 4, 3, 2};
  std::vector<QuantMode> modes = {QuantMode::Full, QuantMode::Dynamic};
  std::vector<std::string> roundings = {"nearest", "gptq"};
  // "per-channel", "per-tensor", or "block32" / "block64" / "block128" (block weights, 2-4 bits).
  std::vector<std::string> granularities = {"per-channel"};
  // Accuracy-driven variants (`lowbit quantize --max-drop`): one per drop (percentage points) and
  // full/dynamic mode requested.
  std::vector<double> max_drops;
  double search_time_budget_seconds = 30;
  std::string out_dir;                      // required
  std::string model_path, data_path;        // for the commands that re-create each variant
  int64_t calibration_samples = 1000;       // the first ones of data.train
  int64_t validation_samples = 5000;        // the last ones of data.train
  // No new variant starts after this many seconds (0: no limit); the others stay to be measured
  // by a later sweep into the same folder.
  double time_budget_seconds = 0;
  bool measure_speed = true;
  // Several processes (MPI ranks) share the variants: variant i is measured by rank i mod ranks,
  // which writes its files into out_dir (a folder every rank sees: a shared file system across
  // machines); every rank then returns the whole result. A rank that dies leaves the variants done
  // so far on disk, and the same sweep run again measures only the rest. Timing figures measured
  // by ranks that share a machine share its cores.
  Communicator* communicator = nullptr;
  // Called before each variant (index, total, name) and once at the end (total, total, "").
  std::function<void(size_t done, size_t total, const std::string& name)> progress;
};

struct SweepLayer {
  std::string layer;
  double sqnr_db = 0, cosine = 1;           // of its output against the float model's (test samples)
  double sensitivity_drop_points = 0;       // validation accuracy drop with only this layer quantized
  bool has_sensitivity = false;
};

struct SweepVariant {
  std::string name;                         // e.g. "full-w4-gptq-per-channel"
  std::string mode, rounding, granularity;  // as the CLI spells them
  int bits = 8;
  std::optional<double> max_drop;           // an accuracy-driven variant
  std::string model_file, command;          // the file, and the command that re-creates it
  bool measured = false, reused = false;    // reused: read from an earlier sweep's figures
  std::string skipped;                      // why it cannot be made (e.g. block weights at 8 bits)
  double test_accuracy = 0, validation_accuracy = 0, drop_points = 0;
  int64_t file_bytes = 0;
  double bits_per_weight = 0;
  double batch1_latency_us = 0, batch256_images_per_second = 0, seconds = 0;  // timing figures
  std::vector<SweepLayer> layers;
  std::vector<int64_t> confusion;           // classes x classes test counts, [true][predicted]
  std::vector<int64_t> newly_wrong;         // test samples the float model gets right and this one not (first 48)
  std::vector<int32_t> newly_wrong_classes; // what this one predicts for them
  bool on_front = false;                    // on the Pareto front of size against test accuracy
};

struct SweepResult {
  std::string model_path, data_path, out_dir;
  int64_t classes = 0, test_samples = 0, validation_samples = 0;
  // The float model, measured the same way.
  double float_test_accuracy = 0, float_validation_accuracy = 0;
  int64_t float_file_bytes = 0;
  double float_batch1_latency_us = 0, float_batch256_images_per_second = 0;
  std::vector<int64_t> float_confusion;
  std::vector<SweepVariant> variants;       // in the order of the options' lists
  int chosen = -1;  // the variant the report details: the smallest within 0.5 points of float, else the most accurate
  bool complete = true;  // false when the time budget stopped the sweep
  // For the report's thumbnails: the test images of the chosen variant's newly_wrong samples
  // (u8, row-major, image_height x image_width each; empty for data that is not images).
  int64_t image_height = 0, image_width = 0;
  std::vector<std::vector<uint8_t>> thumbnails;
  std::vector<int32_t> thumbnail_labels, thumbnail_predictions;
};

// Throws Error(InvalidArgument) for an already quantized model, empty option lists or an empty
// out_dir, and Error(Io) when out_dir cannot be written.
SweepResult run_sweep(const Graph& model, const DatasetSplits& data, const SweepOptions& options);

// Indices of the variants on the Pareto front of (file_bytes, test_accuracy): no other measured
// variant is at most as large and at least as accurate with one of the two strictly better.
// Sorted by size.
std::vector<size_t> pareto_front(const std::vector<SweepVariant>& variants);

// The figures as JSON text (what `lowbit sweep --json` prints and the report draws).
std::string sweep_json(const SweepResult& result);
// One self-contained HTML file (inline SVG and images, no scripts from elsewhere), written
// atomically. Throws Error(Io).
void write_sweep_report(const SweepResult& result, const std::string& path);

// The page of `lowbit compare --html`: one variant (`model`) against `against` as the reference,
// from compare()'s result on data.test (`compared`) and both models' test predictions.
struct CompareResult;
SweepResult compare_sweep(const Graph& model, const Graph& against, const DatasetSplits& data, const CompareResult& compared,
                          const std::string& model_path, const std::string& against_path, const std::string& data_path);

}  // namespace lowbit
