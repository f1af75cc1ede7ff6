// lowbit/calibration.h - observe activation ranges on calibration data for static quantization.
//
// Runs the float model over a calibration subset and records, for the graph input and every f32
// value a node produces, the range [min, max] that static quantization should cover. Memory is
// bounded (one 2048-bin histogram per value) and the result depends only on the model, the data
// and the options.
//
//   lowbit::CalibrationOptions options;             // method MinMax, 1000 samples
//   options.method = lowbit::CalibrationMethod::Kl;
//   lowbit::Calibration ranges = lowbit::calibrate(model, data.train, options);
//   lowbit::save_calibration(ranges, "ranges.json");   // readable, editable JSON
//
// Methods: minmax (the observed extremes), moving_average (per-batch extremes averaged with
// factor 0.01, as PyTorch's MovingAverageMinMaxObserver), percentile (clip the outer
// (100 - p)% of values), mse (the clipping range minimising the expected squared quantization
// error), kl (the threshold minimising the KL divergence between the value's histogram and its
// quantized version, as TensorRT's entropy calibration).
#pragma once

#include <map>
#include <string>

#include "lowbit/dataset.h"
#include "lowbit/graph.h"
#include "lowbit/train.h"

namespace lowbit {

enum class CalibrationMethod { MinMax, MovingAverage, Percentile, Mse, Kl };
const char* name_of(CalibrationMethod method) noexcept;
CalibrationMethod calibration_method_from_name(const std::string& name);  // throws with the list

struct CalibrationOptions {
  CalibrationMethod method = CalibrationMethod::MinMax;
  int64_t samples = 1000;     // the first N samples of the given data
  double percentile = 99.99;  // for Percentile
  int bits = 8;               // the activation bit width the range is chosen for (mse, kl)
  int batch_size = 256;
  // Several processes (MPI ranks): the batches are dealt out to the ranks in turn, their
  // statistics gathered (histograms summed exactly), and every rank returns the calibration one
  // process would have computed, bit for bit.
  Communicator* communicator = nullptr;
};

struct ValueRange {
  float min = 0, max = 0;
};

struct Calibration {
  std::string method;
  int64_t samples = 0;
  std::map<std::string, ValueRange> ranges;  // by value name
};

Calibration calibrate(const Graph& model, const Dataset& data, const CalibrationOptions& options);
void save_calibration(const Calibration& calibration, const std::string& path);
// Throws Error(Format) naming the file and field for a malformed file.
Calibration load_calibration(const std::string& path);

}  // namespace lowbit
