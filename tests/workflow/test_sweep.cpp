// run_sweep, pareto_front and the report (lowbit/sweep.h) on a briefly trained MLP and real data:
// every variant measured and kept as a model file, the figures reused by a later sweep into the
// same folder, an interrupted sweep completed, and the same figures giving the same HTML bytes.
#include <unistd.h>

#include <filesystem>

#include "test_util.h"

namespace lowbit {
namespace {

struct Small {
  DatasetSplits data;
  Graph model;
};
const Small& small() {
  static const Small s = [] {
    Small s;
    const DatasetSplits all = load_dataset_dir(testing::test_dataset_dir());
    s.data.train = all.train.head(4000);
    s.data.test = all.test.head(1000);
    s.model = build_model(parse_arch("784-32-10"), s.data.train.sample_shape(), 10, 0);
    TrainOptions o;
    o.epochs = 1;
    train(s.model, s.data.train, o);
    return s;
  }();
  return s;
}

std::string fresh_dir(const std::string& name) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("lowbit-sweep-" + name + "-" + std::to_string(::getpid()))).string();
  std::filesystem::remove_all(dir);
  return dir;
}

SweepOptions options(const std::string& dir) {
  SweepOptions o;
  o.bits = {8, 4};
  o.modes = {QuantMode::Full, QuantMode::Dynamic};
  o.roundings = {"nearest"};
  o.granularities = {"per-channel", "block32"};
  o.out_dir = dir;
  o.model_path = "mlp.lbm";
  o.data_path = "data";
  o.calibration_samples = 500;
  o.validation_samples = 1000;
  o.measure_speed = false;  // timing figures are not what these tests check
  return o;
}

SweepVariant point(const std::string& name, int64_t bytes, double accuracy) {
  SweepVariant v;
  v.name = name;
  v.measured = true;
  v.file_bytes = bytes;
  v.test_accuracy = accuracy;
  return v;
}

TEST(Sweep, ParetoFrontKeepsWhatNothingDominates) {
  std::vector<SweepVariant> v = {point("big-good", 100, 0.9), point("small-bad", 10, 0.5), point("dominated", 100, 0.8),
                                 point("mid", 50, 0.85),       point("tie-a", 30, 0.7),    point("tie-b", 30, 0.7),
                                 point("worse-and-bigger", 60, 0.6)};
  v.push_back(point("unmeasured", 1, 1.0));
  v.back().measured = false;
  const std::vector<size_t> front = pareto_front(v);
  std::vector<std::string> names;
  for (size_t i : front) names.push_back(v[i].name);
  EXPECT_EQ(names, (std::vector<std::string>{"small-bad", "tie-a", "mid", "big-good"}));
}

TEST(Sweep, MeasuresEveryVariantAndReusesThemLater) {
  const Small& s = small();
  const std::string dir = fresh_dir("reuse");
  const SweepResult r = run_sweep(s.model, s.data, options(dir));
  ASSERT_EQ(r.variants.size(), 8u);  // {full, dynamic} x {8, 4} x {per-channel, block32}
  EXPECT_TRUE(r.complete);
  int measured = 0;
  for (const auto& v : r.variants) {
    if (v.bits == 8 && v.granularity == "block32") {
      EXPECT_FALSE(v.measured) << v.name;
      EXPECT_NE(v.skipped.find("2, 3 or 4 bits"), std::string::npos) << v.skipped;
      continue;
    }
    ASSERT_TRUE(v.measured) << v.name << ": " << v.skipped;
    ++measured;
    EXPECT_FALSE(v.reused);
    EXPECT_TRUE(std::filesystem::exists(v.model_file)) << v.model_file;
    // The file is the variant: evaluating it gives the accuracy the sweep reports.
    EXPECT_DOUBLE_EQ(evaluate(load_model(v.model_file), s.data.test).accuracy, v.test_accuracy) << v.name;
    EXPECT_NEAR(v.drop_points, (r.float_test_accuracy - v.test_accuracy) * 100, 1e-9);
    EXPECT_EQ(v.file_bytes, static_cast<int64_t>(std::filesystem::file_size(v.model_file)));
    EXPECT_NE(v.command.find("lowbit quantize --model mlp.lbm"), std::string::npos) << v.command;
    EXPECT_FALSE(v.layers.empty());
    int64_t total = 0;
    for (int64_t c : v.confusion) total += c;
    EXPECT_EQ(total, s.data.test.size());
    if (v.granularity == "per-channel") {
      bool any_sensitivity = false;
      for (const auto& l : v.layers) any_sensitivity |= l.has_sensitivity;
      EXPECT_TRUE(any_sensitivity) << v.name;
    }
  }
  EXPECT_EQ(measured, 6);
  ASSERT_GE(r.chosen, 0);
  EXPECT_TRUE(r.variants[static_cast<size_t>(r.chosen)].measured);
  // 4-bit weights are smaller than 8-bit ones.
  const auto& w8 = r.variants[0];
  const auto& w4 = r.variants[2];
  EXPECT_EQ(w8.name, "full-w8-nearest-per-channel");
  EXPECT_EQ(w4.name, "full-w4-nearest-per-channel");
  EXPECT_LT(w4.file_bytes, w8.file_bytes);

  // A second sweep into the folder measures nothing and returns the same figures.
  const SweepResult again = run_sweep(s.model, s.data, options(dir));
  ASSERT_EQ(again.variants.size(), r.variants.size());
  for (size_t i = 0; i < r.variants.size(); ++i) {
    EXPECT_TRUE(again.variants[i].reused) << again.variants[i].name;
    EXPECT_EQ(again.variants[i].test_accuracy, r.variants[i].test_accuracy);
    EXPECT_EQ(again.variants[i].confusion, r.variants[i].confusion);
  }
  // The same report bytes.
  write_sweep_report(r, dir + "/a.html");
  write_sweep_report(again, dir + "/b.html");
  EXPECT_EQ(testing::read_bytes(dir + "/a.html"), testing::read_bytes(dir + "/b.html"));

  // Other settings (more calibration samples) are another key: measured again.
  SweepOptions other = options(dir);
  other.calibration_samples = 600;
  other.bits = {8};
  other.modes = {QuantMode::Dynamic};
  other.granularities = {"per-channel"};
  const SweepResult changed = run_sweep(s.model, s.data, other);
  ASSERT_EQ(changed.variants.size(), 1u);
  EXPECT_FALSE(changed.variants[0].reused);
  std::filesystem::remove_all(dir);
}

TEST(Sweep, AnInterruptedSweepFinishesOnlyWhatIsMissing) {
  const Small& s = small();
  const std::string dir = fresh_dir("budget");
  SweepOptions o = options(dir);
  o.granularities = {"per-channel"};
  o.time_budget_seconds = 1e-9;  // the first variant starts, no other
  const SweepResult part = run_sweep(s.model, s.data, o);
  EXPECT_FALSE(part.complete);
  size_t measured = 0;
  for (const auto& v : part.variants) measured += v.measured;
  EXPECT_EQ(measured, 0u) << "the budget was already spent on the float model";
  // Measure two by hand-limited lists, then the whole sweep: only the rest is new.
  SweepOptions first = options(dir);
  first.granularities = {"per-channel"};
  first.modes = {QuantMode::Full};
  const SweepResult some = run_sweep(s.model, s.data, first);
  ASSERT_EQ(some.variants.size(), 2u);
  o.time_budget_seconds = 0;
  const SweepResult all = run_sweep(s.model, s.data, o);
  EXPECT_TRUE(all.complete);
  ASSERT_EQ(all.variants.size(), 4u);
  for (const auto& v : all.variants) {
    EXPECT_TRUE(v.measured) << v.name;
    EXPECT_EQ(v.reused, v.mode == "full") << v.name;
  }
  std::filesystem::remove_all(dir);
}

TEST(Sweep, TheReportDrawsTheFiguresAndIsSelfContained) {
  const Small& s = small();
  const std::string dir = fresh_dir("report");
  SweepOptions o = options(dir);
  o.granularities = {"per-channel"};
  o.max_drops = {1.0};
  o.search_time_budget_seconds = 120;  // about a second in a release build
  const SweepResult r = run_sweep(s.model, s.data, o);
  ASSERT_EQ(r.variants.size(), 6u);  // 4 + a search per mode
  EXPECT_EQ(r.variants[4].name, "search-full-drop1");
  EXPECT_TRUE(r.variants[4].measured) << r.variants[4].skipped;
  write_sweep_report(r, dir + "/report.html");
  const std::string html = testing::read_bytes(dir + "/report.html");
  // One point per measured variant in the size chart, the front drawn, a row per variant.
  size_t measured = 0;
  for (const auto& v : r.variants) measured += v.measured;
  const auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = html.find(what); at != std::string::npos; at = html.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<circle class=\"point"), measured);
  EXPECT_EQ(count("<polyline class=\"front\""), 1u);
  EXPECT_EQ(count("<circle class=\"point on-front"), pareto_front(r.variants).size());
  EXPECT_EQ(count("<td><code>lowbit quantize"), r.variants.size());
  EXPECT_NE(html.find("id=\"chart-layers\""), std::string::npos);
  bool sensitivity = false;  // measured for uniform variants, not for the searches' mixed plans
  for (const auto& l : r.variants[static_cast<size_t>(r.chosen)].layers) sensitivity |= l.has_sensitivity;
  EXPECT_EQ(html.find("id=\"chart-sensitivity\"") != std::string::npos, sensitivity);
  EXPECT_NE(html.find("class=\"confusion\""), std::string::npos);
  EXPECT_EQ(count("src=\"data:image/png;base64,"), r.thumbnails.size());
  // Nothing to fetch: no script, no stylesheet link, every src a data: URI, no URL at all.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(count("src=\""), count("src=\"data:"));
  // The figures are the JSON's: each variant's accuracy appears as it does there (2 decimals, %).
  for (const auto& v : r.variants)
    if (v.measured) {
      char text[32];
      std::snprintf(text, sizeof text, "<td>%.2f</td>", v.test_accuracy * 100);
      EXPECT_NE(html.find(text), std::string::npos) << v.name;
    }
  std::filesystem::remove_all(dir);
}

TEST(Sweep, TheSameFiguresGiveTheSameReportBytes) {
  // A fresh sweep of the same model and data into another folder: the same bytes once the timing
  // figures (here all zero, no timing) and the folder's name are the same. (No search here: a
  // search stops at its time budget, which a loaded machine could reach in one run only.)
  const Small& s = small();
  const std::string dir = fresh_dir("same"), other = fresh_dir("same2");
  SweepOptions o = options(dir);
  o.granularities = {"per-channel"};
  const SweepResult r = run_sweep(s.model, s.data, o);
  write_sweep_report(r, dir + "/report.html");
  const std::string html = testing::read_bytes(dir + "/report.html");
  o.out_dir = other;
  SweepResult r2 = run_sweep(s.model, s.data, o);
  r2.out_dir = r.out_dir;
  for (size_t i = 0; i < r2.variants.size(); ++i) {
    r2.variants[i].seconds = r.variants[i].seconds;
    r2.variants[i].model_file = r.variants[i].model_file;
    r2.variants[i].command = r.variants[i].command;
  }
  write_sweep_report(r2, other + "/report.html");
  EXPECT_EQ(testing::read_bytes(other + "/report.html"), html);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(other);
}

TEST(Sweep, RefusesWhatItCannotSweep) {
  const Small& s = small();
  SweepOptions o = options(fresh_dir("bad"));
  o.granularities = {"per-row"};
  EXPECT_THROW(run_sweep(s.model, s.data, o), Error);
  o = options("");
  EXPECT_THROW(run_sweep(s.model, s.data, o), Error);
  o = options(fresh_dir("bad"));
  o.bits = {5};
  EXPECT_THROW(run_sweep(s.model, s.data, o), Error);
  o = options(fresh_dir("bad"));
  QuantizeOptions q;
  q.calibration_data = &s.data.train;
  const Graph quantized = quantize(s.model, q).model;
  EXPECT_THROW(run_sweep(quantized, s.data, o), Error);
}

TEST(Sweep, CompareHtmlIsTheReportOfOneVariant) {
  const Small& s = small();
  QuantizeOptions q;
  q.weight_bits = 4;
  q.calibration_data = &s.data.train;
  const Graph quantized = quantize(s.model, q).model;
  const CompareResult c = compare(quantized, s.model, s.data.test);
  const SweepResult r = compare_sweep(quantized, s.model, s.data, c, "w4.lbm", "float.lbm", "data");
  ASSERT_EQ(r.variants.size(), 1u);
  EXPECT_EQ(r.chosen, 0);
  EXPECT_DOUBLE_EQ(r.variants[0].test_accuracy, c.model_accuracy);
  EXPECT_DOUBLE_EQ(r.float_test_accuracy, c.against_accuracy);
  const std::string path = fresh_dir("compare") + ".html";
  write_sweep_report(r, path);
  const std::string html = testing::read_bytes(path);
  EXPECT_NE(html.find("w4.lbm"), std::string::npos);
  EXPECT_NE(html.find("class=\"confusion\""), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace lowbit
