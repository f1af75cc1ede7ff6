#include "lowbit/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/file_util.h"
#include "lowbit/executor.h"
#include "lowbit/quant_params.h"
#include "lowbit/train.h"

namespace lowbit {

const char* name_of(CalibrationMethod method) noexcept {
  switch (method) {
    case CalibrationMethod::MinMax: return "minmax";
    case CalibrationMethod::MovingAverage: return "moving_average";
    case CalibrationMethod::Percentile: return "percentile";
    case CalibrationMethod::Mse: return "mse";
    case CalibrationMethod::Kl: return "kl";
  }
  return "?";
}

CalibrationMethod calibration_method_from_name(const std::string& name) {
  for (auto m : {CalibrationMethod::MinMax, CalibrationMethod::MovingAverage, CalibrationMethod::Percentile,
                 CalibrationMethod::Mse, CalibrationMethod::Kl})
    if (name == name_of(m)) return m;
  throw Error(ErrorKind::InvalidArgument,
              "unknown calibration method '" + name + "' (expected minmax, moving_average, percentile, mse or kl)");
}

namespace {

constexpr int kBins = 2048;

// One value's statistics. Pass 1 keeps every batch's extremes (indexed by batch: ranks fill in
// each other's), from which finish() takes the range and the moving average in batch order; pass 2
// counts values into bins over that range (integer counts in doubles: sums are exact in any order).
struct Observer {
  float min = std::numeric_limits<float>::infinity(), max = -std::numeric_limits<float>::infinity();
  double avg_min = 0, avg_max = 0;
  std::vector<float> batch_lo, batch_hi;  // per batch; +inf / -inf for batches not seen (yet)
  std::vector<double> histogram;          // over [min, max] of pass 1

  explicit Observer(int64_t batches)
      : batch_lo(static_cast<size_t>(batches), std::numeric_limits<float>::infinity()),
        batch_hi(static_cast<size_t>(batches), -std::numeric_limits<float>::infinity()) {}
  void observe_batch(int64_t batch, const float* x, int64_t n) {
    if (n == 0) return;
    auto [lo, hi] = std::minmax_element(x, x + n);
    batch_lo[static_cast<size_t>(batch)] = *lo, batch_hi[static_cast<size_t>(batch)] = *hi;
  }
  void finish() {
    bool first = true;
    for (size_t b = 0; b < batch_lo.size(); ++b) {
      const float lo = batch_lo[b], hi = batch_hi[b];
      if (lo > hi) continue;  // an empty batch
      min = std::min(min, lo);
      max = std::max(max, hi);
      if (first) {
        avg_min = lo, avg_max = hi, first = false;
      } else {
        avg_min += 0.01 * (lo - avg_min);
        avg_max += 0.01 * (hi - avg_max);
      }
    }
  }
  void histogram_batch(const float* x, int64_t n) {
    const double width = (static_cast<double>(max) - min) / kBins;
    for (int64_t i = 0; i < n; ++i) {
      int b = width > 0 ? static_cast<int>((x[i] - min) / width) : 0;
      histogram[std::clamp(b, 0, kBins - 1)] += 1;
    }
  }
  double bin_center(int b) const { return min + (b + 0.5) * ((static_cast<double>(max) - min) / kBins); }
};

// Distributed calibration: every rank's observations of its batches, gathered, so that every rank
// holds what one process observing all batches would. Pass 1: each batch's extremes come from the
// rank that observed it; pass 2: the histograms are summed (exactly: integer counts).
void merge_extremes(std::vector<Observer*>& observers, int64_t batches, Communicator& comm) {
  const size_t per_value = 2 * static_cast<size_t>(batches), size = static_cast<size_t>(comm.size());
  std::vector<float> mine(observers.size() * per_value), all(mine.size() * size);
  for (size_t v = 0; v < observers.size(); ++v) {
    std::copy(observers[v]->batch_lo.begin(), observers[v]->batch_lo.end(), mine.begin() + static_cast<ptrdiff_t>(v * per_value));
    std::copy(observers[v]->batch_hi.begin(), observers[v]->batch_hi.end(),
              mine.begin() + static_cast<ptrdiff_t>(v * per_value + static_cast<size_t>(batches)));
  }
  comm.all_gather(mine, all);
  for (size_t v = 0; v < observers.size(); ++v)
    for (int64_t b = 0; b < batches; ++b) {
      const size_t rank = static_cast<size_t>(b) % size;  // (the batch's observer)
      const float* theirs = all.data() + rank * mine.size() + v * per_value;
      observers[v]->batch_lo[static_cast<size_t>(b)] = theirs[b];
      observers[v]->batch_hi[static_cast<size_t>(b)] = theirs[static_cast<size_t>(batches) + static_cast<size_t>(b)];
    }
}

void merge_histograms(std::vector<Observer*>& observers, Communicator& comm) {
  const size_t size = static_cast<size_t>(comm.size());
  std::vector<double> mine(observers.size() * kBins), all(mine.size() * size);
  for (size_t v = 0; v < observers.size(); ++v) {
    std::copy(observers[v]->histogram.begin(), observers[v]->histogram.end(), mine.begin() + static_cast<ptrdiff_t>(v * kBins));
  }
  comm.all_gather(mine, all);
  for (size_t v = 0; v < observers.size(); ++v)
    for (int b = 0; b < kBins; ++b) {
      double sum = 0;
      for (size_t r = 0; r < size; ++r) sum += all[r * mine.size() + v * kBins + static_cast<size_t>(b)];
      observers[v]->histogram[static_cast<size_t>(b)] = sum;
    }
}

ValueRange percentile_range(const Observer& o, double percentile) {
  const double total = std::accumulate(o.histogram.begin(), o.histogram.end(), 0.0);
  const double tail = total * (100.0 - percentile) / 100.0;
  const double width = (static_cast<double>(o.max) - o.min) / kBins;
  int lo = 0, hi = kBins - 1;
  for (double cut = 0; lo < kBins - 1 && cut + o.histogram[lo] <= tail; ++lo) cut += o.histogram[lo];
  for (double cut = 0; hi > lo && cut + o.histogram[hi] <= tail; --hi) cut += o.histogram[hi];
  // Keep the observed bound where nothing was clipped at that end.
  return {lo == 0 ? o.min : static_cast<float>(o.min + lo * width),
          hi == kBins - 1 ? o.max : static_cast<float>(o.min + (hi + 1) * width)};
}

// Expected squared error of quantizing the histogram's values with parameters covering [lo, hi].
double histogram_mse(const Observer& o, float lo, float hi, int bits) {
  const QuantParams p = choose_params(lo, hi, {bits, QScheme::Affine});
  double error = 0;
  for (int b = 0; b < kBins; ++b) {
    if (o.histogram[b] == 0) continue;
    const float x = static_cast<float>(o.bin_center(b));
    const double e = x - p.dequantize(p.quantize(x));
    error += o.histogram[b] * e * e;
  }
  return error;
}

ValueRange mse_range(const Observer& o, int bits) {
  ValueRange best{o.min, o.max};
  double best_error = histogram_mse(o, o.min, o.max, bits);
  for (int step = 1; step < 100; ++step) {
    const float t = 1.0f - step / 100.0f;  // shrink both ends towards 0 by the same factor
    const double e = histogram_mse(o, o.min * t, o.max * t, bits);
    if (e < best_error) best_error = e, best = {o.min * t, o.max * t};
  }
  return best;
}

// TensorRT-style entropy calibration on the histogram of |x| (or x when x >= 0).
ValueRange kl_range(const Observer& o, int bits) {
  const bool nonnegative = o.min >= 0;
  const double bound = std::max(std::fabs(o.min), std::fabs(o.max));
  if (bound == 0) return {o.min, o.max};
  std::vector<double> hist(kBins, 0.0);  // |x| over [0, bound]
  for (int b = 0; b < kBins; ++b) {
    const double a = std::fabs(o.bin_center(b));
    hist[std::min(kBins - 1, static_cast<int>(a / bound * kBins))] += o.histogram[b];
  }
  const int levels = nonnegative ? (1 << bits) : (1 << (bits - 1));
  double best_kl = std::numeric_limits<double>::infinity();
  int best_i = kBins;
  for (int i = std::min(levels, kBins); i <= kBins; ++i) {
    std::vector<double> p(hist.begin(), hist.begin() + i);
    p[i - 1] += std::accumulate(hist.begin() + i, hist.end(), 0.0);  // outliers fold into the last bin
    std::vector<double> q(i, 0.0);
    for (int l = 0; l < levels; ++l) {  // merge into `levels` groups, spread back over non-empty bins
      const int start = static_cast<int>(static_cast<int64_t>(l) * i / levels);
      const int end = static_cast<int>(static_cast<int64_t>(l + 1) * i / levels);
      double mass = 0;
      int nonzero = 0;
      for (int j = start; j < end; ++j) mass += hist[j], nonzero += hist[j] > 0;
      for (int j = start; j < end; ++j) q[j] = hist[j] > 0 ? mass / nonzero : 0.0;
    }
    const double p_sum = std::accumulate(p.begin(), p.end(), 0.0), q_sum = std::accumulate(q.begin(), q.end(), 0.0);
    if (p_sum == 0 || q_sum == 0) continue;
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      if (p[j] == 0) continue;
      const double pj = p[j] / p_sum, qj = std::max(q[j] / q_sum, 1e-12);
      kl += pj * std::log(pj / qj);
    }
    if (kl < best_kl) best_kl = kl, best_i = i;
  }
  const float threshold = static_cast<float>(bound * best_i / kBins);
  if (nonnegative) return {o.min, std::min(o.max, threshold)};
  return {std::max(o.min, -threshold), std::min(o.max, threshold)};
}

}  // namespace

Calibration calibrate(const Graph& model, const Dataset& data, const CalibrationOptions& options) {
  if (options.samples < 1) throw Error(ErrorKind::InvalidArgument, "calibration needs at least one sample");
  if (!(options.percentile > 50.0 && options.percentile <= 100.0))
    throw Error(ErrorKind::InvalidArgument, "percentile must be in (50, 100]");
  Executor run(model);
  // Observe the graph inputs (those that are f32: image bytes are not) and every f32 value a node produces.
  std::vector<std::string> names;
  for (const auto& in : model.inputs)
    if (in.dtype == DType::F32) names.push_back(in.name);
  const auto info = model.infer_shapes();
  for (const auto& node : model.nodes)
    for (const auto& out : node.outputs)
      if (info.at(out).dtype == DType::F32 && !node.inputs.empty()) names.push_back(out);  // not constants
  const int64_t count = std::min(options.samples, data.size());
  const int64_t batches = (count + options.batch_size - 1) / options.batch_size;
  Communicator* comm = options.communicator && options.communicator->size() > 1 ? options.communicator : nullptr;
  std::map<std::string, Observer> observers;
  std::vector<Observer*> ordered;  // in `names` order: what the ranks exchange
  for (const auto& name : names) ordered.push_back(&observers.try_emplace(name, batches).first->second);
  std::vector<uint32_t> indices;
  const bool needs_histogram = options.method == CalibrationMethod::Percentile || options.method == CalibrationMethod::Mse ||
                               options.method == CalibrationMethod::Kl;
  for (int pass = 0; pass < (needs_histogram ? 2 : 1); ++pass) {
    for (int64_t batch = 0; batch < batches; ++batch) {
      if (comm && batch % comm->size() != comm->rank()) continue;  // another rank's
      const int64_t begin = batch * options.batch_size, n = std::min<int64_t>(options.batch_size, count - begin);
      indices.resize(static_cast<size_t>(n));
      std::iota(indices.begin(), indices.end(), static_cast<uint32_t>(begin));
      feed_batch(data, indices, model, run);
      run.forward();
      for (size_t v = 0; v < names.size(); ++v) {
        const Tensor& t = run.value(names[v]);
        if (pass == 0)
          ordered[v]->observe_batch(batch, t.data<float>(), t.numel());
        else
          ordered[v]->histogram_batch(t.data<float>(), t.numel());
      }
    }
    if (pass == 0) {
      if (comm) merge_extremes(ordered, batches, *comm);
      for (Observer* o : ordered) o->finish(), o->histogram.assign(needs_histogram ? kBins : 0, 0.0);
    } else if (comm) {
      merge_histograms(ordered, *comm);
    }
  }
  Calibration result;
  result.method = name_of(options.method);
  result.samples = count;
  for (const auto& name : names) {
    const Observer& o = observers.at(name);
    ValueRange r{o.min, o.max};
    switch (options.method) {
      case CalibrationMethod::MinMax: break;
      case CalibrationMethod::MovingAverage: r = {static_cast<float>(o.avg_min), static_cast<float>(o.avg_max)}; break;
      case CalibrationMethod::Percentile: r = percentile_range(o, options.percentile); break;
      case CalibrationMethod::Mse: r = mse_range(o, options.bits); break;
      case CalibrationMethod::Kl: r = kl_range(o, options.bits); break;
    }
    result.ranges[name] = r;
  }
  return result;
}

void save_calibration(const Calibration& c, const std::string& path) {
  nlohmann::ordered_json j;
  j["format"] = "lowbit-calibration";
  j["version"] = 1;
  j["method"] = c.method;
  j["samples"] = c.samples;
  j["ranges"] = nlohmann::ordered_json::object();
  for (const auto& [name, r] : c.ranges) j["ranges"][name] = {{"min", r.min}, {"max", r.max}};
  files::write_file_atomically(path, j.dump(2) + "\n");
}

Calibration load_calibration(const std::string& path) {
  auto fail = [&](const std::string& what) { throw Error(ErrorKind::Format, "'" + path + "': " + what); };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(files::read_file(path));
  } catch (const nlohmann::json::exception& e) {  // a syntax error, or a number beyond double's range
    fail(std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("format") || !j["format"].is_string() || j["format"].get<std::string>() != "lowbit-calibration")
    fail("field 'format' must be \"lowbit-calibration\"");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int>() != 1)
    fail("field 'version' must be 1");
  if (!j.contains("ranges") || !j["ranges"].is_object()) fail("field 'ranges' must be an object of {\"min\", \"max\"}");
  Calibration c;
  if (j.contains("method") && !j["method"].is_string()) fail("field 'method' must be a string");
  if (j.contains("samples") && !j["samples"].is_number_integer()) fail("field 'samples' must be an integer");
  c.method = j.value("method", "");
  c.samples = j.value("samples", int64_t{0});
  for (const auto& [name, r] : j["ranges"].items()) {
    if (!r.is_object() || !r.contains("min") || !r.contains("max") || !r["min"].is_number() || !r["max"].is_number())
      fail("ranges." + name + " must be {\"min\": number, \"max\": number}");
    ValueRange v{r["min"].get<float>(), r["max"].get<float>()};
    if (!std::isfinite(v.min) || !std::isfinite(v.max) || v.min > v.max)
      fail("ranges." + name + ": min " + std::to_string(v.min) + " must be finite and not above max " + std::to_string(v.max));
    c.ranges[name] = v;
  }
  return c;
}

}  // namespace lowbit
