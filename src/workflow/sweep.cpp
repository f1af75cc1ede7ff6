// run_sweep(): every requested quantization of one model, measured, resumable (lowbit/sweep.h).
// The figures of each variant live in DIR/variants/<name>.json beside its model DIR/<name>.lbm;
// the JSON holds a key made of the float model's bytes, the data and the settings, so that a sweep
// into a folder reuses what an earlier one (with the same model, data and settings) measured.
#include "lowbit/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/digest.h"
#include <numeric>

#include "core/file_util.h"
#include "lowbit/idx.h"
#include "lowbit/model_io.h"
#include "lowbit/quant_search.h"
#include "lowbit/workflow.h"

namespace lowbit {
namespace {

using json = nlohmann::ordered_json;
constexpr int kFormat = 2;            // of the variant files; another value is measured again
constexpr size_t kNewlyWrong = 48;    // test samples listed per variant (the report's thumbnails)

void add_dataset(Digest& d, const Dataset& data) {
  d.add(std::to_string(data.size()) + " " + to_string(data.sample_shape()));
  if (data.images.defined()) d.add(data.images.raw(), data.images.nbytes());
  d.add(data.labels.data(), data.labels.size() * sizeof(int32_t));
}

std::string format_drop(double d) {
  std::string s = std::to_string(d);
  while (s.size() > 1 && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string quoted(const std::string& s) {
  if (s.find_first_of(" '\"$\\") == std::string::npos && !s.empty()) return s;
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Settings {
  QuantMode mode = QuantMode::Full;
  int bits = 8;
  std::string rounding = "nearest", granularity = "per-channel";
  std::optional<double> max_drop;
};

std::string variant_name(const Settings& s) {
  if (s.max_drop) return std::string("search-") + name_of(s.mode) + "-drop" + format_drop(*s.max_drop);
  return std::string(name_of(s.mode)) + "-w" + std::to_string(s.bits) + "-" + s.rounding + "-" + s.granularity;
}

int group_size_of(const std::string& granularity) {
  if (granularity.rfind("block", 0) == 0) {
    const std::string n = granularity.substr(5);
    if (n == "32" || n == "64" || n == "128") return std::stoi(n);
  }
  if (granularity == "per-channel" || granularity == "per-tensor") return 0;
  throw Error(ErrorKind::InvalidArgument, "sweep: granularity must be per-channel, per-tensor, block32, block64 or block128, got '" +
                                              granularity + "'");
}

QuantizeOptions options_for(const Settings& s, const SweepOptions& o, const Dataset& train) {
  QuantizeOptions q;
  q.mode = s.mode;
  q.weight_bits = s.bits;
  q.per_channel = s.granularity != "per-tensor";
  q.group_size = group_size_of(s.granularity);
  q.rounding = s.rounding;
  q.calibration_data = &train;
  q.calibration_samples = o.calibration_samples;
  q.validation_samples = o.validation_samples;
  if (s.max_drop) {
    q.max_drop = *s.max_drop;
    q.time_budget_seconds = o.search_time_budget_seconds;
  } else {
    apply_bit_width_defaults(q, false, true, true);  // the CLI's weight grid for these bits
  }
  return q;
}

std::string command_for(const Settings& s, const SweepOptions& o, const std::string& file) {
  std::string c = "lowbit quantize --model " + quoted(o.model_path.empty() ? "model.lbm" : o.model_path) + " --out " + quoted(file) +
                  " --mode " + name_of(s.mode);
  if (s.max_drop) {
    c += " --max-drop " + format_drop(*s.max_drop) + " --time-budget " + format_drop(o.search_time_budget_seconds);
  } else {
    c += " --bits " + std::to_string(s.bits) + " --rounding " + s.rounding;
    if (s.granularity == "per-tensor") c += " --per-tensor";
    if (group_size_of(s.granularity) > 0) c += " --group-size " + std::to_string(group_size_of(s.granularity));
  }
  c += " --calib-data " + quoted(o.data_path.empty() ? default_dataset_dir() : o.data_path) +
       " --calib-samples " + std::to_string(o.calibration_samples) + " --validation-samples " + std::to_string(o.validation_samples);
  return c;
}

std::vector<int64_t> confusion_of(const std::vector<int32_t>& predicted, const Dataset& test, int64_t classes) {
  std::vector<int64_t> m(static_cast<size_t>(classes * classes), 0);
  for (size_t i = 0; i < predicted.size(); ++i) {
    const int64_t t = test.labels[i], p = predicted[i];
    if (t >= 0 && t < classes && p >= 0 && p < classes) ++m[static_cast<size_t>(t * classes + p)];
  }
  return m;
}

double accuracy_of(const std::vector<int32_t>& predicted, const Dataset& data) {
  int64_t right = 0;
  for (size_t i = 0; i < predicted.size(); ++i) right += predicted[i] == data.labels[i];
  return predicted.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(predicted.size());
}

json variant_to_json(const SweepVariant& v, const std::string& key) {
  json layers = json::array();
  for (const auto& l : v.layers) {
    json j = {{"layer", l.layer}, {"sqnr_db", std::isfinite(l.sqnr_db) ? l.sqnr_db : 999.0}, {"cosine", l.cosine}};
    if (l.has_sensitivity) j["sensitivity_drop_points"] = l.sensitivity_drop_points;
    layers.push_back(j);
  }
  json j = {{"format", kFormat}, {"key", key}, {"name", v.name}, {"mode", v.mode}, {"bits", v.bits}, {"rounding", v.rounding},
            {"granularity", v.granularity}};
  if (v.max_drop) j["max_drop"] = *v.max_drop;
  j["model_file"] = v.model_file;
  j["command"] = v.command;
  if (!v.skipped.empty()) {
    j["skipped"] = v.skipped;
    return j;
  }
  j["test_accuracy"] = v.test_accuracy;
  j["validation_accuracy"] = v.validation_accuracy;
  j["drop_points"] = v.drop_points;
  j["file_bytes"] = v.file_bytes;
  j["bits_per_weight"] = v.bits_per_weight;
  j["batch1_latency_us"] = v.batch1_latency_us;
  j["batch256_images_per_second"] = v.batch256_images_per_second;
  j["seconds"] = v.seconds;
  j["layers"] = layers;
  j["confusion"] = v.confusion;
  j["newly_wrong"] = v.newly_wrong;
  j["newly_wrong_classes"] = v.newly_wrong_classes;
  return j;
}

// The variant's figures from its file, or nothing when the file is missing, unreadable, of
// another format or key, or its model file is gone (the variant is then measured again).
std::optional<SweepVariant> read_variant(const std::string& path, const std::string& key, const SweepVariant& base) {
  if (!files::file_exists(path)) return std::nullopt;
  try {
    const json j = json::parse(files::read_file(path));
    if (j.value("format", 0) != kFormat || j.value("key", std::string()) != key || j.value("name", std::string()) != base.name)
      return std::nullopt;
    SweepVariant v = base;
    v.reused = true;
    if (j.contains("skipped")) {
      v.skipped = j.at("skipped").get<std::string>();
      return v;
    }
    if (!files::file_exists(v.model_file)) return std::nullopt;
    v.measured = true;
    v.test_accuracy = j.at("test_accuracy").get<double>();
    v.validation_accuracy = j.at("validation_accuracy").get<double>();
    v.drop_points = j.at("drop_points").get<double>();
    v.file_bytes = j.at("file_bytes").get<int64_t>();
    v.bits_per_weight = j.at("bits_per_weight").get<double>();
    v.batch1_latency_us = j.at("batch1_latency_us").get<double>();
    v.batch256_images_per_second = j.at("batch256_images_per_second").get<double>();
    v.seconds = j.at("seconds").get<double>();
    for (const auto& l : j.at("layers")) {
      SweepLayer layer{l.at("layer").get<std::string>(), l.at("sqnr_db").get<double>(), l.at("cosine").get<double>()};
      if (l.contains("sensitivity_drop_points")) {
        layer.sensitivity_drop_points = l.at("sensitivity_drop_points").get<double>();
        layer.has_sensitivity = true;
      }
      v.layers.push_back(layer);
    }
    v.confusion = j.at("confusion").get<std::vector<int64_t>>();
    v.newly_wrong = j.at("newly_wrong").get<std::vector<int64_t>>();
    v.newly_wrong_classes = j.at("newly_wrong_classes").get<std::vector<int32_t>>();
    if (v.newly_wrong_classes.size() != v.newly_wrong.size()) return std::nullopt;
    return v;
  } catch (const std::exception&) {
    return std::nullopt;  // a damaged file: measure again
  }
}

void write_json(const std::string& path, const json& j) { files::write_file_atomically(path, j.dump(1) + "\n"); }

// The report's thumbnails: the test images of v's newly_wrong samples with what v predicts for them
// (u8 images of one channel only; other data has none).
void add_thumbnails(SweepResult& r, const Dataset& test, const SweepVariant& v) {
  const Shape shape = test.sample_shape();
  if (!test.images.defined() || test.images.dtype() != DType::U8 || !(shape.size() == 2 || (shape.size() == 3 && shape[0] == 1))) return;
  r.image_height = shape[shape.size() - 2];
  r.image_width = shape.back();
  const size_t pixels = static_cast<size_t>(r.image_height * r.image_width);
  for (size_t i = 0; i < v.newly_wrong.size(); ++i) {
    const size_t t = static_cast<size_t>(v.newly_wrong[i]);
    const uint8_t* first = test.images.data<uint8_t>() + t * pixels;
    r.thumbnails.emplace_back(first, first + pixels);
    r.thumbnail_labels.push_back(test.labels[t]);
    r.thumbnail_predictions.push_back(v.newly_wrong_classes[i]);
  }
}

// v's test samples that the reference classifies right and `classes` wrong (the first
// kNewlyWrong), with their classes.
void set_newly_wrong(SweepVariant& v, const std::vector<int32_t>& reference, const std::vector<int32_t>& classes, const Dataset& test) {
  for (size_t t = 0; t < classes.size() && v.newly_wrong.size() < kNewlyWrong; ++t)
    if (reference[t] == test.labels[t] && classes[t] != test.labels[t]) {
      v.newly_wrong.push_back(static_cast<int64_t>(t));
      v.newly_wrong_classes.push_back(classes[t]);
    }
}

}  // namespace

std::vector<size_t> pareto_front(const std::vector<SweepVariant>& variants) {
  std::vector<size_t> front;
  for (size_t i = 0; i < variants.size(); ++i) {
    const SweepVariant& a = variants[i];
    if (!a.measured) continue;
    bool dominated = false;
    for (size_t j = 0; j < variants.size() && !dominated; ++j) {
      const SweepVariant& b = variants[j];
      if (j == i || !b.measured) continue;
      const bool no_worse = b.file_bytes <= a.file_bytes && b.test_accuracy >= a.test_accuracy;
      const bool better = b.file_bytes < a.file_bytes || b.test_accuracy > a.test_accuracy;
      // Two identical points: the first one listed stays on the front.
      dominated = no_worse && (better || j < i);
    }
    if (!dominated) front.push_back(i);
  }
  std::stable_sort(front.begin(), front.end(), [&](size_t x, size_t y) { return variants[x].file_bytes < variants[y].file_bytes; });
  return front;
}

SweepResult run_sweep(const Graph& model, const DatasetSplits& data, const SweepOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  if (is_quantized(model)) throw Error(ErrorKind::InvalidArgument, "sweep: the model is already quantized: sweep its float model");
  if (o.out_dir.empty()) throw Error(ErrorKind::InvalidArgument, "sweep: no output folder (out_dir)");
  if (o.modes.empty() || (o.bits.empty() && o.max_drops.empty()) || o.roundings.empty() || o.granularities.empty())
    throw Error(ErrorKind::InvalidArgument, "sweep: every list of settings (bits, modes, roundings, granularities) needs an entry");
  for (const auto& r : o.roundings)
    if (r != "nearest" && r != "gptq") throw Error(ErrorKind::InvalidArgument, "sweep: rounding must be nearest or gptq, got '" + r + "'");
  for (int b : o.bits)
    if (b != 8 && b != 6 && b != 4 && b != 3 && b != 2)
      throw Error(ErrorKind::InvalidArgument, "sweep: bits must be 8, 6, 4, 3 or 2, got " + std::to_string(b));
  for (const auto& g : o.granularities) group_size_of(g);
  if (data.test.size() == 0 || data.train.size() == 0 || !data.test.inputs.empty())
    throw Error(ErrorKind::InvalidArgument, "sweep: the data needs labelled training and test splits (a dataset folder)");
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(o.out_dir) / "variants", ec);
  if (ec) throw Error(ErrorKind::Io, o.out_dir + ": cannot create the folder: " + ec.message());

  const Dataset& train = data.train;
  const Dataset& test = data.test;
  const Dataset validation = train.slice(train.size() - std::min(o.validation_samples, train.size()), train.size());

  SweepResult result;
  result.model_path = o.model_path;
  result.data_path = o.data_path;
  result.out_dir = o.out_dir;
  result.test_samples = test.size();
  result.validation_samples = validation.size();
  result.classes = std::max(test.num_classes, train.num_classes);

  Digest base;
  base.add("lowbit-sweep");
  base.add(serialize_model(model));
  add_dataset(base, train);
  add_dataset(base, test);
  base.add(std::to_string(o.calibration_samples) + " " + std::to_string(o.validation_samples) + " " +
           format_drop(o.search_time_budget_seconds) + (o.measure_speed ? " speed" : ""));

  // Several ranks (MPI): variant i is rank (i mod ranks)'s; each writes its variants' files into
  // the folder (a file system they share), and every rank then reads the others' figures back.
  Communicator* comm = o.communicator && o.communicator->size() > 1 ? o.communicator : nullptr;
  auto barrier = [&] {
    if (!comm) return;
    std::vector<float> mine(1), all(static_cast<size_t>(comm->size()));
    comm->all_gather(mine, all);
  };
  // The float model: measured once per folder (its own figures file), by rank 0.
  const std::vector<int32_t> float_classes = predict_classes(model, test);
  {
    const std::string path = (std::filesystem::path(o.out_dir) / "variants" / "float.json").string();
    const std::string key = base.hex();
    std::optional<json> cached;
    if (files::file_exists(path)) {
      try {
        json j = json::parse(files::read_file(path));
        if (j.value("format", 0) == kFormat && j.value("key", std::string()) == key) cached = j;
      } catch (const std::exception&) {
      }
    }
    if (comm && comm->rank() != 0) {  // rank 0 measures (if need be); the others read its file
      barrier();
      try {
        json j = json::parse(files::read_file(path));
        if (j.value("key", std::string()) == key) cached = j;
      } catch (const std::exception&) {
      }
      if (!cached)
        throw Error(ErrorKind::Io, path + ": rank 0 wrote the float model's figures there, and rank " + std::to_string(comm->rank()) +
                                       " cannot read them: the sweep's folder must be on a file system every rank shares");
    }
    if (!cached) {
      json j = {{"format", kFormat}, {"key", key}};
      j["test_accuracy"] = accuracy_of(float_classes, test);
      j["validation_accuracy"] = evaluate(model, validation).accuracy;
      j["file_bytes"] = static_cast<int64_t>(serialize_model(model).size());
      const Speed s = o.measure_speed ? measure_speed(model, test) : Speed{};
      j["batch1_latency_us"] = s.batch1_latency_us;
      j["batch256_images_per_second"] = s.batch256_images_per_second;
      write_json(path, j);
      cached = j;
    }
    if (comm && comm->rank() == 0) barrier();
    result.float_test_accuracy = cached->at("test_accuracy").get<double>();
    result.float_validation_accuracy = cached->at("validation_accuracy").get<double>();
    result.float_file_bytes = cached->at("file_bytes").get<int64_t>();
    result.float_batch1_latency_us = cached->at("batch1_latency_us").get<double>();
    result.float_batch256_images_per_second = cached->at("batch256_images_per_second").get<double>();
    result.float_confusion = confusion_of(float_classes, test, result.classes);
  }

  std::vector<Settings> all;
  for (QuantMode mode : o.modes)
    for (int bits : o.bits)
      for (const auto& rounding : o.roundings)
        for (const auto& granularity : o.granularities) all.push_back({mode, bits, rounding, granularity, std::nullopt});
  for (double drop : o.max_drops)
    for (QuantMode mode : o.modes)
      if (mode != QuantMode::Partial) all.push_back({mode, 8, "nearest", "per-channel", drop});

  // Activation ranges of the float model, once (min-max, as quantize's default).
  std::map<std::string, Calibration> ranges;
  auto ranges_once = [&]() -> const std::map<std::string, Calibration>& {
    if (ranges.empty()) {
      CalibrationOptions c;
      c.samples = o.calibration_samples;
      ranges["minmax"] = calibrate(model, train, c);
    }
    return ranges;
  };

  // Per variant, after the loop: 0 another rank's, 1 measured (or skipped) now, 2 left for a later
  // sweep, 3 reused from an earlier one.
  std::vector<float> state(all.size(), 0.0f);
  std::vector<std::string> keys(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const Settings& s = all[i];
    SweepVariant v;
    v.name = variant_name(s);
    v.mode = name_of(s.mode);
    v.bits = s.max_drop ? 0 : s.bits;
    v.rounding = s.max_drop ? "search" : s.rounding;
    v.granularity = s.max_drop ? "search" : s.granularity;
    v.max_drop = s.max_drop;
    v.model_file = (std::filesystem::path(o.out_dir) / (v.name + ".lbm")).string();
    v.command = command_for(s, o, v.model_file);
    Digest d = base;  // the model's bytes, the data, the sample counts; the name holds the settings
    d.add(v.name);
    const std::string key = d.hex();
    keys[i] = key;
    const std::string figures = (std::filesystem::path(o.out_dir) / "variants" / (v.name + ".json")).string();
    if (comm && static_cast<int>(i % static_cast<size_t>(comm->size())) != comm->rank()) {
      result.variants.push_back(v);  // another rank's: filled in below
      continue;
    }
    state[i] = 1.0f;
    if (o.progress) o.progress(i, all.size(), v.name);
    if (auto cached = read_variant(figures, key, v)) {
      state[i] = 3.0f;
      result.variants.push_back(*cached);
      continue;
    }
    if (o.time_budget_seconds > 0 && std::chrono::duration<double>(Clock::now() - start).count() > o.time_budget_seconds) {
      result.complete = false;
      state[i] = 2.0f;
      result.variants.push_back(v);  // not measured: a later sweep does it
      continue;
    }
    const auto begin = Clock::now();
    Graph quantized;
    QuantizeOptions q = options_for(s, o, train);
    try {  // quantize() refuses what cannot be made (e.g. block weights at 8 bits): a skipped variant
      if (s.mode != QuantMode::Dynamic && !s.max_drop) q.ranges = ranges_once();
      quantized = quantize(model, q).model;
    } catch (const Error& e) {
      v.skipped = e.what();
    }
    if (!v.skipped.empty()) {
      write_json(figures, variant_to_json(v, key));
      result.variants.push_back(v);
      continue;
    }
    save_model(quantized, v.model_file);
    v.file_bytes = static_cast<int64_t>(std::filesystem::file_size(v.model_file, ec));
    v.bits_per_weight = model_info(quantized).bits_per_weight;
    CompareOptions co;
    co.measure_speed = false;
    const CompareResult c = compare(quantized, model, test, co);  // its classes, and the layers' errors
    v.test_accuracy = c.model_accuracy;
    v.drop_points = (result.float_test_accuracy - v.test_accuracy) * 100;
    v.validation_accuracy = evaluate(quantized, validation).accuracy;
    v.confusion = confusion_of(c.model_classes, test, result.classes);
    set_newly_wrong(v, float_classes, c.model_classes, test);
    std::map<std::string, double> sensitivity;
    if (!s.max_drop) {
      // Each layer quantized alone with these settings (round-to-nearest: GPTQ would need its
      // Hessians per layer), on the validation split.
      LayerRule rule;
      rule.weight_bits = s.bits;
      rule.per_channel = s.granularity != "per-tensor";
      rule.group_size = group_size_of(s.granularity);
      rule.weight_scheme = q.weight_scheme;
      const QuantMode m = s.mode == QuantMode::Dynamic ? QuantMode::Dynamic : QuantMode::Full;
      for (const auto& l : analyze_sensitivity(model, validation, rule, m, m == QuantMode::Dynamic ? ranges : ranges_once()))
        sensitivity[l.layer] = l.drop_points;
    }
    for (const auto& l : c.layers) {
      SweepLayer layer{l.layer, l.error.sqnr_db, l.error.cosine};
      if (auto it = sensitivity.find(l.layer); it != sensitivity.end()) layer.sensitivity_drop_points = it->second, layer.has_sensitivity = true;
      v.layers.push_back(layer);
    }
    if (o.measure_speed) {
      const Speed sp = measure_speed(quantized, test);
      v.batch1_latency_us = sp.batch1_latency_us;
      v.batch256_images_per_second = sp.batch256_images_per_second;
    }
    v.measured = true;
    v.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
    write_json(figures, variant_to_json(v, key));
    result.variants.push_back(v);
  }
  if (comm) {  // every rank's variants: their figures from the files their ranks wrote
    const size_t ranks = static_cast<size_t>(comm->size());
    std::vector<float> states(state.size() * ranks);
    comm->all_gather(state, states);
    for (size_t i = 0; i < all.size(); ++i) {
      const size_t owner = i % ranks;
      if (owner == static_cast<size_t>(comm->rank())) continue;
      const float theirs = states[owner * state.size() + i];
      if (theirs == 2.0f) {
        result.complete = false;
        continue;
      }
      SweepVariant& v = result.variants[i];
      const std::string figures = (std::filesystem::path(o.out_dir) / "variants" / (v.name + ".json")).string();
      std::optional<SweepVariant> read = read_variant(figures, keys[i], v);
      if (!read)
        throw Error(ErrorKind::Io, figures + ": rank " + std::to_string(owner) + " wrote this variant's figures, and rank " +
                                       std::to_string(comm->rank()) + " cannot read them: the sweep's folder must be on a file system every rank shares");
      v = *read;
      v.reused = theirs == 3.0f;
    }
  }
  if (o.progress) o.progress(all.size(), all.size(), "");

  for (size_t i : pareto_front(result.variants)) result.variants[i].on_front = true;
  for (size_t i = 0; i < result.variants.size(); ++i) {
    const SweepVariant& v = result.variants[i];
    if (!v.measured) continue;
    if (result.chosen < 0) {
      result.chosen = static_cast<int>(i);
      continue;
    }
    const SweepVariant& c = result.variants[static_cast<size_t>(result.chosen)];
    const bool v_ok = v.drop_points <= 0.5, c_ok = c.drop_points <= 0.5;
    if ((v_ok && !c_ok) || (v_ok && c_ok && v.file_bytes < c.file_bytes) || (!v_ok && !c_ok && v.test_accuracy > c.test_accuracy))
      result.chosen = static_cast<int>(i);
  }
  if (result.chosen >= 0) add_thumbnails(result, test, result.variants[static_cast<size_t>(result.chosen)]);
  return result;
}

std::string sweep_json(const SweepResult& r) {
  json variants = json::array();
  for (const auto& v : r.variants) {
    json j = variant_to_json(v, "");
    j.erase("format");
    j.erase("key");
    j["measured"] = v.measured;
    j["reused"] = v.reused;
    j["on_front"] = v.on_front;
    variants.push_back(j);
  }
  json front = json::array();
  for (size_t i : pareto_front(r.variants)) front.push_back(r.variants[i].name);
  json j = {{"command", "sweep"},
            {"model", r.model_path},
            {"data", r.data_path},
            {"out", r.out_dir},
            {"complete", r.complete},
            {"classes", r.classes},
            {"test_samples", r.test_samples},
            {"validation_samples", r.validation_samples},
            {"float", {{"test_accuracy", r.float_test_accuracy}, {"validation_accuracy", r.float_validation_accuracy},
                       {"file_bytes", r.float_file_bytes}, {"batch1_latency_us", r.float_batch1_latency_us},
                       {"batch256_images_per_second", r.float_batch256_images_per_second}, {"confusion", r.float_confusion}}},
            {"pareto_front", front},
            {"chosen", r.chosen >= 0 ? json(r.variants[static_cast<size_t>(r.chosen)].name) : json()},
            {"variants", variants}};
  return j.dump();
}

SweepResult compare_sweep(const Graph& model, const Graph& against, const DatasetSplits& data, const CompareResult& c,
                          const std::string& model_path, const std::string& against_path, const std::string& data_path) {
  const Dataset& test = data.test;
  if (test.size() == 0) throw Error(ErrorKind::InvalidArgument, "compare: the data has no test split");
  SweepResult r;
  r.model_path = against_path;
  r.data_path = data_path;
  r.test_samples = test.size();
  r.classes = test.num_classes;
  const std::vector<int32_t>&reference = c.against_classes, &classes = c.model_classes;  // compare() made both
  r.float_test_accuracy = c.against_accuracy;
  r.float_file_bytes = static_cast<int64_t>(serialize_model(against).size());
  r.float_confusion = confusion_of(reference, test, r.classes);
  r.float_batch1_latency_us = c.against_speed.batch1_latency_us;
  r.float_batch256_images_per_second = c.against_speed.batch256_images_per_second;
  SweepVariant v;
  v.name = std::filesystem::path(model_path).filename().string();
  v.mode = is_quantized(model) ? "quantized" : "float";
  v.rounding = v.granularity = "-";
  v.model_file = model_path;
  v.command = "lowbit compare --model " + quoted(model_path) + " --against " + quoted(against_path) + " --data " + quoted(data_path);
  v.measured = true;
  v.test_accuracy = c.model_accuracy;
  v.drop_points = (r.float_test_accuracy - v.test_accuracy) * 100;
  v.file_bytes = static_cast<int64_t>(serialize_model(model).size());
  v.bits_per_weight = model_info(model).bits_per_weight;
  v.batch1_latency_us = c.model_speed.batch1_latency_us;
  v.batch256_images_per_second = c.model_speed.batch256_images_per_second;
  v.confusion = confusion_of(classes, test, r.classes);
  set_newly_wrong(v, reference, classes, test);
  for (const auto& l : c.layers) v.layers.push_back({l.layer, l.error.sqnr_db, l.error.cosine});
  v.on_front = true;
  r.variants.push_back(v);
  r.chosen = 0;
  add_thumbnails(r, test, v);
  return r;
}

}  // namespace lowbit
