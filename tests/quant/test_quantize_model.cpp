// Calibration, the quantization transform, dequantization, sensitivity and search, on a small
// trained model and on real data.
#include <cstring>
#include <numeric>

#include "kernels/blockq.h"
#include "test_util.h"

namespace lowbit {
namespace {

// A model whose single Dense layer passes its input through (identity weights), so the graph
// input's values reach the observed output unchanged.
Graph identity_model(int64_t n) {
  Graph g;
  g.name = "identity";
  g.inputs.push_back({"image", DType::F32, {-1, 1, n}});
  Tensor w(DType::F32, {n, n});
  for (int64_t i = 0; i < n; ++i) w.data<float>()[i * n + i] = 1.0f;
  g.initializers["fc.weight"] = w;
  g.add_node({"flat", "Flatten", {"image"}, {"flat"}});
  g.add_node({"fc", "Dense", {"flat", "fc.weight"}, {"fc"}});
  g.outputs = {"fc"};
  g.metadata["input_scale"] = "1";
  g.validate();
  return g;
}

Dataset values_as_dataset(const std::vector<uint8_t>& values, int64_t per_sample) {
  Dataset d;
  const int64_t count = static_cast<int64_t>(values.size()) / per_sample;
  d.images = Tensor(DType::U8, {count, 1, per_sample});
  std::memcpy(d.images.raw(), values.data(), values.size());
  d.labels.assign(static_cast<size_t>(count), 0);
  d.num_classes = 1;
  return d;
}

TEST(Calibration, ObserversOnKnownDistributions) {
  // Uniform values 0..199 with a few outliers at 255.
  std::vector<uint8_t> v;
  for (int i = 0; i < 20000; ++i) v.push_back(static_cast<uint8_t>(i % 200));
  for (int i = 0; i < 10; ++i) v.push_back(255);
  Dataset d = values_as_dataset(v, 10);
  Graph g = identity_model(10);
  CalibrationOptions o;
  o.samples = d.size();
  Calibration minmax = calibrate(g, d, o);
  EXPECT_FLOAT_EQ(minmax.ranges.at("fc").min, 0.0f);
  EXPECT_FLOAT_EQ(minmax.ranges.at("fc").max, 255.0f);
  EXPECT_FLOAT_EQ(minmax.ranges.at("image").max, 255.0f);
  o.method = CalibrationMethod::Percentile;
  o.percentile = 99.9;
  Calibration pct = calibrate(g, d, o);  // 10 outliers of 20010 values = 0.05% < 0.1%: clipped
  EXPECT_NEAR(pct.ranges.at("fc").max, 200.0f, 2.0f);
  // At 8 bits these integer values quantize exactly over the full range; at 4 bits clipping the
  // rare outliers makes the step smaller for everything else, and MSE calibration finds that.
  o.method = CalibrationMethod::Mse;
  o.bits = 4;
  Calibration mse = calibrate(g, d, o);
  EXPECT_LT(mse.ranges.at("fc").max, 255.0f);
  EXPECT_GT(mse.ranges.at("fc").max, 150.0f);
  o.method = CalibrationMethod::Kl;
  Calibration kl = calibrate(g, d, o);
  EXPECT_LE(kl.ranges.at("fc").max, 255.0f);
  EXPECT_GT(kl.ranges.at("fc").max, 150.0f);
  o.method = CalibrationMethod::MovingAverage;
  o.batch_size = 100;
  Calibration avg = calibrate(g, d, o);
  EXPECT_LE(avg.ranges.at("fc").max, 255.0f);
  EXPECT_GE(avg.ranges.at("fc").max, 199.0f);
  // Deterministic.
  EXPECT_EQ(calibrate(g, d, o).ranges.at("fc").max, avg.ranges.at("fc").max);
}

TEST(Calibration, FileRoundTripAndBadFiles) {
  testing::TempDir dir;
  Calibration c;
  c.method = "kl";
  c.samples = 10;
  c.ranges["x"] = {-1.5f, 2.25f};
  save_calibration(c, dir.file("r.json"));
  Calibration back = load_calibration(dir.file("r.json"));
  EXPECT_EQ(back.method, "kl");
  EXPECT_EQ(back.ranges.at("x").max, 2.25f);
  testing::write_bytes(dir.file("bad1.json"), R"({"format": "lowbit-calibration", "version": 1, "ranges": {"x": {"min": 3, "max": 1}}})");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad1.json")), "bad1.json': ranges.x: min");
  testing::write_bytes(dir.file("bad2.json"), R"({"format": "something-else"})");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad2.json")), "field 'format'");
  testing::write_bytes(dir.file("bad3.json"), "{");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad3.json")), "not valid JSON");
  // Found by the fuzzer (tests/fuzz/regressions/ranges): a number beyond double's range, and
  // fields of the wrong type, are errors naming the file, not escaping JSON exceptions.
  testing::write_bytes(dir.file("bad4.json"), R"({"format": "lowbit-calibration", "version": 1, "ranges": {"x": {"min": 1e999, "max": 2}}})");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad4.json")), "bad4.json': not valid JSON");
  testing::write_bytes(dir.file("bad5.json"), R"({"format": "lowbit-calibration", "version": 1, "samples": "many", "ranges": {}})");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad5.json")), "field 'samples' must be an integer");
  testing::write_bytes(dir.file("bad6.json"), R"({"format": 7, "version": 1, "ranges": {}})");
  EXPECT_LOWBIT_ERROR(load_calibration(dir.file("bad6.json")), "field 'format' must be");
  EXPECT_LOWBIT_ERROR(calibration_method_from_name("entropy"), "unknown calibration method");
}

TEST(QuantPlan, JsonRoundTripAndErrors) {
  QuantPlan p;
  p.mode = QuantMode::Partial;
  p.layers["dense_1"].weight_bits = 4;
  p.layers["dense_1"].calibration = "kl";
  QuantPlan back = QuantPlan::from_json(p.to_json(), "plan");
  EXPECT_EQ(back.mode, QuantMode::Partial);
  EXPECT_EQ(back.rule_for("dense_1").weight_bits, 4);
  EXPECT_EQ(back.rule_for("dense_1").calibration, "kl");
  EXPECT_FALSE(back.rule_for("dense_2").quantize);
  auto bad = [](const char* text) { return QuantPlan::from_json(text, "p.json"); };
  EXPECT_LOWBIT_ERROR(bad(R"({"format": "lowbit-quantization-plan", "version": 1, "layers": {"a": {"weight_bits": 5.5}}})"),
                      "layers.a: 'weight_bits' must be an integer");
  EXPECT_LOWBIT_ERROR(bad(R"({"format": "lowbit-quantization-plan", "version": 1, "layers": {"a": {"bits": 4}}})"),
                      "unknown field 'bits'");
  EXPECT_LOWBIT_ERROR(bad(R"({"format": "lowbit-quantization-plan", "version": 1, "mode": "half"})"), "unknown quantization mode");
  EXPECT_LOWBIT_ERROR(bad(R"({"format": "lowbit-quantization-plan", "version": 2})"), "'version' must be 1");
  EXPECT_LOWBIT_ERROR(bad(R"({"format": "lowbit-quantization-plan", "version": 1e999})"), "p.json': not valid JSON");
}

// A reference MLP trained briefly on real Fashion-MNIST, shared by the tests below.
struct Trained {
  DatasetSplits data;
  Graph model;
  Dataset validation, test;
  std::map<std::string, Calibration> ranges;
  double float_accuracy = 0;
};
const Trained& trained() {
  static const Trained t = [] {
    Trained t;
    t.data = load_dataset_dir(testing::test_dataset_dir());
    Dataset train = t.data.train.head(5000);
    t.model = build_model(parse_arch("784-64-32-10"), train.sample_shape(), 10, 0);
    TrainOptions o;
    o.epochs = 3;
    set_num_threads(2);
    lowbit::train(t.model, train, o);
    t.validation = t.data.train.slice(55000, 57000);
    t.test = t.data.test.head(3000);
    for (const char* m : {"minmax", "kl"}) {
      CalibrationOptions c;
      c.method = calibration_method_from_name(m);
      c.samples = 500;
      t.ranges[m] = calibrate(t.model, t.data.train, c);
    }
    t.float_accuracy = evaluate(t.model, t.test).accuracy;
    return t;
  }();
  return t;
}

TEST(Quantize, FullInt8IsIntegerOnlyAndAccurate) {
  const Trained& t = trained();
  QuantPlan plan;
  Graph q = quantize_model(t.model, plan, t.ranges);
  int qdense = 0;
  for (const auto& node : q.nodes) {
    EXPECT_NE(node.op, "Dense");
    qdense += node.op == "QDense";
  }
  EXPECT_EQ(qdense, 3);
  EXPECT_EQ(q.initializers.at("dense_1.weight_codes").dtype(), DType::S8);
  auto info = q.infer_shapes();
  EXPECT_EQ(info.at("dense_1").dtype, DType::S8);  // integer between layers
  EXPECT_EQ(info.at("dense_3").dtype, DType::F32);  // the last layer feeds the softmax
  const double accuracy = evaluate(q, t.test).accuracy;
  EXPECT_NEAR(accuracy, t.float_accuracy, 0.01);
  // It saves, loads and gives the same predictions.
  testing::TempDir dir;
  save_model(q, dir.file("q.lbm"));
  EXPECT_EQ(evaluate(load_model(dir.file("q.lbm")), t.test).accuracy, accuracy);
}

// The integer paths (scalar reference, AVX2, AVX-512 VNNI where the CPU has it) give the same
// bytes for every value of the int8 model on the whole test set.
TEST(Quantize, IntegerPathsAreBitExactOnTheWholeTestSet) {
  const Trained& t = trained();
  for (int bits : {8, 4}) {
    QuantPlan plan;
    plan.defaults.weight_bits = bits;
    Graph q = quantize_model(t.model, plan, t.ranges);
    std::vector<std::vector<uint8_t>> outputs;
    const std::vector<Isa> levels = testing::isa_levels();
    for (Isa isa : levels) {
      set_max_isa(isa);
      Executor run(q);
      std::vector<uint8_t> bytes;
      std::vector<uint32_t> idx;
      for (int64_t begin = 0; begin < t.data.test.size(); begin += 1000) {
        idx.resize(1000);
        std::iota(idx.begin(), idx.end(), static_cast<uint32_t>(begin));
        gather_batch(t.data.test, idx, q, run.input("image"));
        run.forward();
        for (const char* value : {"dense_1", "dense_2", "dense_3"}) {
          testing::append_bytes(run.value(value), bytes);
        }
      }
      outputs.push_back(std::move(bytes));
    }
    set_max_isa(Isa::Avx512Vnni);
    for (size_t i = 1; i < outputs.size(); ++i)
      EXPECT_EQ(outputs[i], outputs[0]) << bits << "-bit weights: " << name_of(levels[i]) << " differs from the reference";
  }
}

// The same trained MLP with a float input (its batches scaled by the caller, as models were built
// before the scaling moved into the graph): quantized from the same calibration, it gives the same
// logits bit for bit, although the byte model requantizes its bytes in one step (Requantize)
// where the float one quantizes after the Flatten.
TEST(Quantize, ScalingTheBytesInTheGraphChangesNoPrediction) {
  const Trained& t = trained();
  Graph by_caller;
  by_caller.name = t.model.name;
  by_caller.inputs = {{"image", DType::F32, t.model.inputs[0].shape}};
  by_caller.outputs = t.model.outputs;
  by_caller.initializers = t.model.initializers;
  by_caller.metadata["input_scale"] = "0.003922";
  for (Node n : t.model.nodes) {
    if (n.inputs.empty() || n.op == "DequantizeLinear") continue;  // the scaling
    for (auto& in : n.inputs)
      if (in == "image_scaled") in = "image";
    by_caller.add_node(std::move(n));
  }
  by_caller.validate();
  std::map<std::string, Calibration> ranges = t.ranges;
  for (auto& [method, c] : ranges) c.ranges["image"] = c.ranges.at("image_scaled");
  for (const char* method : {"minmax", "kl"}) {
    QuantPlan plan;
    plan.defaults.calibration = method;
    const Graph bytes = quantize_model(t.model, plan, t.ranges), floats = quantize_model(by_caller, plan, ranges);
    int requantize = 0;
    for (const auto& n : bytes.nodes) requantize += n.op == "Requantize";
    EXPECT_EQ(requantize, 1);
    const Tensor a = compute_logits(bytes, t.test, 100), b = compute_logits(floats, t.test, 100);
    ASSERT_EQ(a.nbytes(), b.nbytes());
    EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << method;
    // Dequantized, the byte model is its float model again (the scaling back in place of the Requantize).
    const Graph back = dequantize_model(bytes);
    ASSERT_EQ(back.nodes.size(), t.model.nodes.size());
    for (size_t i = 0; i < back.nodes.size(); ++i) EXPECT_EQ(back.nodes[i].outputs, t.model.nodes[i].outputs) << i;
  }
}

TEST(Quantize, LowBitWeightsArePackedAndStillWork) {
  const Trained& t = trained();
  for (int bits : {4, 2}) {
    QuantPlan plan;
    plan.defaults.weight_bits = bits;
    Graph q = quantize_model(t.model, plan, t.ranges);
    const Tensor& codes = q.initializers.at("dense_1.weight_codes");
    EXPECT_EQ(codes.dtype(), bits == 4 ? DType::S4 : DType::S2);
    EXPECT_EQ(static_cast<int64_t>(codes.nbytes()), 64 * 784 * bits / 8);
    const double accuracy = evaluate(q, t.test).accuracy;
    EXPECT_GT(accuracy, bits == 4 ? t.float_accuracy - 0.03 : 0.3) << bits;
  }
}

TEST(Quantize, BlockWeightsAreBlockQDenseLayersInEveryMode) {
  const Trained& t = trained();
  for (QuantMode mode : {QuantMode::Full, QuantMode::Dynamic})
    for (int bits : {4, 3, 2})
      for (int group : {32, 128})
        for (QScheme scheme : {QScheme::Symmetric, QScheme::Affine}) {
          QuantPlan plan;
          plan.mode = mode;
          plan.defaults.weight_bits = bits;
          plan.defaults.group_size = group;
          plan.defaults.weight_scheme = scheme;
          const Graph q = quantize_model(t.model, plan, t.ranges);
          const std::string what = std::to_string(bits) + " bits, blocks of " + std::to_string(group) + " " + name_of(scheme);
          for (const auto& node : q.nodes)
            if (node.name.rfind("dense_", 0) == 0) {
              EXPECT_EQ(node.op, "BlockQDense") << what;
            }
          const int64_t blocks = (784 + group - 1) / group;
          EXPECT_EQ(q.initializers.at("dense_1.weight_codes").shape(), (Shape{64, blocks * block_bytes(bits, group)})) << what;
          EXPECT_EQ(q.initializers.at("dense_1.weight_scale").dtype(), DType::F16);
          EXPECT_EQ(q.initializers.count("dense_1.weight_zero_point"), scheme == QScheme::Affine ? 1u : 0u);
          // The dequantized weights are the block grid's values: the layer's fake-quantized weights.
          const Graph back = dequantize_model(q);
          const Tensor& w = t.model.initializers.at("dense_1.weight");
          const Tensor expected = fake_quantize(w, choose_block_weight_params(w, bits, scheme, group));
          const Tensor& wb = back.initializers.at("dense_1.weight");
          ASSERT_EQ(wb.shape(), w.shape());
          EXPECT_EQ(std::memcmp(wb.raw(), expected.raw(), w.nbytes()), 0) << what;
          // The quantized model computes the dequantized one with its inputs quantized per block:
          // nearly the same predictions.
          const double accuracy = evaluate(q, t.test).accuracy;
          EXPECT_NEAR(accuracy, evaluate(back, t.test).accuracy, 0.01) << what;
          if (bits == 4) {
            EXPECT_GT(accuracy, t.float_accuracy - 0.02) << what;
          }
          // The model file keeps them exactly.
          EXPECT_EQ(serialize_model(deserialize_model(serialize_model(q), "q")), serialize_model(q));
        }
}

TEST(Quantize, BlockWeightsNeedDenseLayersAndFewBits) {
  const Trained& t = trained();
  QuantPlan plan;
  plan.defaults.weight_bits = 8;
  plan.defaults.group_size = 32;
  EXPECT_LOWBIT_ERROR(quantize_model(t.model, plan, t.ranges), "block weights have 2, 3 or 4 bits");
  EXPECT_LOWBIT_ERROR(QuantPlan::from_json(plan.to_json(), "p.json"), "have 2, 3 or 4 bits");
  plan.defaults.weight_bits = 4;
  const QuantPlan back = QuantPlan::from_json(plan.to_json(), "p.json");
  EXPECT_EQ(back.defaults.group_size, 32);
  std::string bad = plan.to_json();
  bad.replace(bad.find("\"group_size\":32"), 15, "\"group_size\":0");
  EXPECT_LOWBIT_ERROR(QuantPlan::from_json(bad, "p.json"), "'group_size' must be 32, 64 or 128");
  QuantizeOptions o;
  o.weight_bits = 4;
  o.group_size = 16;
  EXPECT_LOWBIT_ERROR(quantize(t.model, o), "group size must be 32, 64 or 128");
  o.group_size = 64;
  o.per_channel = false;
  EXPECT_LOWBIT_ERROR(quantize(t.model, o), "bits per tensor");
}

TEST(Quantize, PartialKeepsChosenLayersFloatWithBoundaries) {
  const Trained& t = trained();
  QuantPlan plan;
  plan.mode = QuantMode::Partial;
  plan.layers["dense_2"] = LayerRule{};
  Graph q = quantize_model(t.model, plan, t.ranges);
  std::map<std::string, std::string> ops;
  for (const auto& node : q.nodes) ops[node.name] = node.op;
  EXPECT_EQ(ops["dense_1"], "Dense");
  EXPECT_EQ(ops["dense_2"], "QDense");
  EXPECT_EQ(ops["dense_3"], "Dense");
  EXPECT_EQ(ops["dense_1_quantized"], "QuantizeLinear");
  EXPECT_NEAR(evaluate(q, t.test).accuracy, t.float_accuracy, 0.01);
  EXPECT_EQ(select_layers(t.model, "dense_*,dense_2").size(), 3u);
  EXPECT_LOWBIT_ERROR(select_layers(t.model, "conv*"), "matches no quantizable layer");
}

TEST(Quantize, DynamicNeedsNoCalibration) {
  const Trained& t = trained();
  QuantPlan plan;
  plan.mode = QuantMode::Dynamic;
  Graph q = quantize_model(t.model, plan, {});
  // The first layer reads the image bytes as they are (exact s8 codes b - 128 on the bytes' grid,
  // one Requantize, then an integer layer with f32 output); the others quantize at run time.
  std::map<std::string, std::string> ops;
  for (const auto& node : q.nodes) ops[node.name] = node.op;
  EXPECT_EQ(ops["dense_1"], "QDense");
  EXPECT_EQ(ops["dense_2"], "DynamicQDense");
  EXPECT_EQ(ops["dense_3"], "DynamicQDense");
  for (const auto& node : q.nodes) EXPECT_NE(node.op, "QuantizeLinear");
  const auto first = std::find_if(q.nodes.begin(), q.nodes.end(), [](const Node& n) { return n.op == "Requantize"; });
  ASSERT_NE(first, q.nodes.end());
  const auto info = q.infer_shapes();
  const Node& dense_1 = *std::find_if(q.nodes.begin(), q.nodes.end(), [](const Node& n) { return n.name == "dense_1"; });
  EXPECT_EQ(info.at(dense_1.inputs[0]).dtype, DType::S8);
  EXPECT_EQ(info.at(dense_1.outputs[0]).dtype, DType::F32);
  // The bytes' grid: scale 1/255 (the model's input scaling), zero point -128.
  EXPECT_NEAR(q.initializers.at(first->inputs[2]).data<float>()[0], 1.0 / 255, 1e-6);  // the model's 0.003922
  EXPECT_EQ(q.initializers.at(first->inputs[3]).data<int8_t>()[0], -128);
  EXPECT_FALSE(is_quantized(dequantize_model(q)));
  EXPECT_NEAR(evaluate(q, t.test).accuracy, t.float_accuracy, 0.01);
  plan.dynamic_granularity = "tensor";
  EXPECT_NEAR(evaluate(quantize_model(t.model, plan, {}), t.test).accuracy, t.float_accuracy, 0.01);
}

TEST(Quantize, DequantizeIsTheInverseTransform) {
  const Trained& t = trained();
  QuantPlan plan;
  plan.defaults.weight_scheme = QScheme::Affine;
  plan.defaults.weight_bits = 6;
  Graph q = quantize_model(t.model, plan, t.ranges);
  Graph back = dequantize_model(q);
  EXPECT_FALSE(is_quantized(back));
  ASSERT_EQ(back.nodes.size(), t.model.nodes.size());
  for (size_t i = 0; i < back.nodes.size(); ++i) EXPECT_EQ(back.nodes[i].op, t.model.nodes[i].op);
  // Weights land on the quantization grid: within half a step of the originals.
  const Tensor& w = t.model.initializers.at("dense_1.weight");
  const Tensor& wb = back.initializers.at("dense_1.weight");
  EXPECT_GT(compare_tensors(w, wb).sqnr_db, 25.0);
  // Re-quantizing the dequantized model reproduces the same codes.
  Graph again = quantize_model(back, plan, t.ranges);
  const Tensor &c1 = q.initializers.at("dense_1.weight_codes"), &c2 = again.initializers.at("dense_1.weight_codes");
  EXPECT_EQ(std::memcmp(c1.raw(), c2.raw(), c1.nbytes()), 0);
  EXPECT_NEAR(evaluate(back, t.test).accuracy, evaluate(q, t.test).accuracy, 0.01);
}

TEST(Quantize, ClearErrorsForBadInputs) {
  const Trained& t = trained();
  QuantPlan plan;
  EXPECT_LOWBIT_ERROR(quantize_model(t.model, plan, {}), "no 'minmax' calibration ranges");
  plan.layers["conv_1"] = LayerRule{};
  EXPECT_LOWBIT_ERROR(quantize_model(t.model, plan, t.ranges), "names layer 'conv_1'");
  std::map<std::string, Calibration> wrong = {{"minmax", Calibration{"minmax", 1, {{"image", {0, 1}}}}}};
  EXPECT_LOWBIT_ERROR(quantize_model(t.model, QuantPlan{}, wrong), "no entry for value");
  Graph q = quantize_model(t.model, QuantPlan{}, t.ranges);
  EXPECT_LOWBIT_ERROR(quantize_model(q, QuantPlan{}, t.ranges), "already quantized");
  Dataset small;
  small.images = Tensor(DType::U8, {4, 14, 14});
  small.labels.assign(4, 0);
  small.num_classes = 10;
  EXPECT_LOWBIT_ERROR(evaluate(q, small), "expects samples of shape [28, 28]");
}

TEST(Search, SensitivityAndPlansThatMeetTheDrop) {
  const Trained& t = trained();
  auto sens = analyze_sensitivity(t.model, t.validation, LayerRule{}, QuantMode::Full, t.ranges);
  ASSERT_EQ(sens.size(), 3u);
  for (const auto& s : sens) {
    EXPECT_GT(s.sqnr_db, 20.0) << s.layer;
    EXPECT_GT(s.cosine, 0.99) << s.layer;
  }
  SearchOptions o;
  o.max_drop_points = 1.0;
  o.time_budget_seconds = 120;
  SearchResult r = search_plan(t.model, t.validation, t.ranges, o);
  EXPECT_TRUE(r.met);
  EXPECT_LE(r.drop_points, 1.0);
  Graph uniform8 = quantize_model(t.model, QuantPlan{}, t.ranges);
  EXPECT_LT(r.weight_bytes, initializer_bytes(uniform8));  // smaller than int8
}

// With calibration data the search also tries GPTQ rounding at 4 bits and fewer (and only there),
// and the plan it returns rebuilds the model it measured.
TEST(Search, TriesGptqRoundingAtLowBitsWithCalibrationData) {
  const Trained& t = trained();
  SearchOptions o;
  o.max_drop_points = 1.0;
  o.time_budget_seconds = 120;
  const Dataset calibration = t.data.train.head(500);
  o.calibration_data = &calibration;
  o.calibration_samples = 500;
  std::vector<std::string> lines;
  o.log = [&](const std::string& line) { lines.push_back(line); };
  const SearchResult r = search_plan(t.model, t.validation, t.ranges, o);
  EXPECT_TRUE(r.met);
  int gptq_tries = 0;
  for (const auto& line : lines)
    if (line.find(", gptq:") != std::string::npos) {
      ++gptq_tries;
      EXPECT_TRUE(line.find(" at 4 bits") != std::string::npos || line.find(" at 3 bits") != std::string::npos ||
                  line.find(" at 2 bits") != std::string::npos) << line;
    }
  EXPECT_GT(gptq_tries, 0);
  for (const auto& [layer, rule] : r.plan.layers) {
    if (rule.rounding == "gptq") {
      EXPECT_LE(rule.weight_bits, 4) << layer;
    }
  }
  // The model of the returned plan (GPTQ codes recomputed as quantize() does) scores what the search measured.
  const Graph q = quantize_model(t.model, r.plan, t.ranges, gptq_weights(t.model, r.plan, calibration, 500));
  EXPECT_DOUBLE_EQ(evaluate(q, t.validation).accuracy, r.accuracy);
  EXPECT_EQ(initializer_bytes(q), r.weight_bytes);
  // Without calibration data: round to nearest only.
  o.calibration_data = nullptr;
  lines.clear();
  const SearchResult nearest = search_plan(t.model, t.validation, t.ranges, o);
  for (const auto& line : lines) EXPECT_EQ(line.find("gptq"), std::string::npos) << line;
  for (const auto& [layer, rule] : nearest.plan.layers) EXPECT_EQ(rule.rounding, "nearest") << layer;
}

TEST(Search, UnreachableDropReturnsTheBestPlanFound) {
  const Trained& t = trained();
  SearchOptions o;
  o.max_drop_points = -50;  // impossible: the plan would have to gain 50 points
  o.time_budget_seconds = 60;
  SearchResult r = search_plan(t.model, t.validation, t.ranges, o);
  EXPECT_FALSE(r.met);
  EXPECT_GT(r.evaluations, 0);
  EXPECT_FALSE(r.plan.layers.empty());
  o.max_drop_points = 1.0;
  o.time_budget_seconds = 0;  // no time at all: still a plan
  SearchResult quick = search_plan(t.model, t.validation, t.ranges, o);
  EXPECT_TRUE(quick.timed_out);
  EXPECT_FALSE(quick.plan.layers.empty());
}

}  // namespace
}  // namespace lowbit
