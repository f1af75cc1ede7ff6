// The workflow calls (include/lowbit/workflow.h) on a briefly trained reference MLP and real data:
// each mode and selection, the result structs, and the errors for missing data.
#include <algorithm>

#include "test_util.h"

namespace lowbit {
namespace {

struct Trained {
  DatasetSplits data;
  Dataset train, test;
  Graph model;
};
const Trained& trained_mlp() {
  static const Trained s = [] {
    Trained s;
    s.data = load_dataset_dir(testing::test_dataset_dir());
    s.train = s.data.train.head(6000);
    s.test = s.data.test.head(2000);
    s.model = build_model(parse_arch("784-64-32-10"), s.train.sample_shape(), 10, 0);
    TrainOptions o;
    o.epochs = 2;
    set_num_threads(2);
    train(s.model, s.train, o);
    return s;
  }();
  return s;
}

TEST(Workflow, QuantizeCalibratesAndMatchesTheStepByStepCalls) {
  const Trained& s = trained_mlp();
  QuantizeOptions o;
  o.weight_bits = 4;
  o.calibration_data = &s.train;
  o.calibration_samples = 500;
  const QuantizeResult r = quantize(s.model, o);
  EXPECT_TRUE(r.met);
  EXPECT_TRUE(r.sensitivity.empty());
  EXPECT_EQ(r.plan.defaults.weight_bits, 4);
  // The same as calibrate + quantize_model by hand, byte for byte.
  CalibrationOptions c;
  c.samples = 500;
  QuantPlan plan;
  plan.defaults.weight_bits = 4;
  const Graph by_hand = quantize_model(s.model, plan, {{"minmax", calibrate(s.model, s.train, c)}});
  EXPECT_EQ(serialize_model(r.model), serialize_model(by_hand));
  EXPECT_GT(evaluate(r.model, s.test).accuracy, evaluate(s.model, s.test).accuracy - 0.05);
  EXPECT_FALSE(r.test.has_value());  // no test_data, no evaluation
  // With test_data: both models evaluated there, as evaluate() does.
  o.test_data = &s.test;
  const QuantizeResult tested = quantize(s.model, o);
  ASSERT_TRUE(tested.float_test && tested.test);
  EXPECT_EQ(tested.float_test->accuracy, evaluate(s.model, s.test).accuracy);
  EXPECT_EQ(tested.test->accuracy, evaluate(r.model, s.test).accuracy);
  EXPECT_EQ(tested.test->count, s.test.size());
}

TEST(Workflow, PartialBySensitivityKeepsTheMostSensitiveLayerFloat) {
  const Trained& s = trained_mlp();
  QuantizeOptions o;
  o.mode = QuantMode::Partial;
  o.calibration_data = &s.train;
  o.calibration_samples = 500;
  o.validation_samples = 1000;
  o.keep_float = 1;
  const QuantizeResult r = quantize(s.model, o);
  ASSERT_EQ(r.sensitivity.size(), 3u);
  EXPECT_EQ(r.validation_samples, 1000);
  const auto most = std::max_element(r.sensitivity.begin(), r.sensitivity.end(),
                                     [](const auto& a, const auto& b) { return a.drop_points < b.drop_points; });
  EXPECT_FALSE(r.plan.rule_for(most->layer).quantize);
  int quantized = 0;
  for (const auto& l : quantizable_layers(s.model)) quantized += r.plan.rule_for(l).quantize;
  EXPECT_EQ(quantized, 2);
  // By name: only the layers named.
  o.layers = "dense_1";
  const QuantizeResult named = quantize(s.model, o);
  EXPECT_TRUE(named.sensitivity.empty());
  EXPECT_TRUE(named.plan.rule_for("dense_1").quantize);
  EXPECT_FALSE(named.plan.rule_for("dense_2").quantize);
}

TEST(Workflow, DynamicNeedsNoDataAndStaticModesSayWhatIsMissing) {
  const Trained& s = trained_mlp();
  QuantizeOptions o;
  o.mode = QuantMode::Dynamic;
  EXPECT_FALSE(quantize_needs_data(o));
  EXPECT_EQ(quantize(s.model, o).plan.mode, QuantMode::Dynamic);
  o.mode = QuantMode::Full;
  EXPECT_TRUE(quantize_needs_data(o));
  EXPECT_LOWBIT_ERROR(quantize(s.model, o), "quantize: calibration needs data (calibration_data)");
  o.mode = QuantMode::Partial;  // ranges given, but choosing layers by sensitivity needs validation data
  o.ranges = {{"minmax", calibrate(s.model, s.train, CalibrationOptions{})}};
  EXPECT_TRUE(quantize_needs_data(o));
  o.layers = "dense_1";  // named layers with ranges: no data needed
  EXPECT_FALSE(quantize_needs_data(o));
  o.layers.clear();
  EXPECT_LOWBIT_ERROR(quantize(s.model, o), "quantize: choosing layers by sensitivity needs data");
  const QuantizeResult q = quantize(s.model, QuantizeOptions{.calibration_data = &s.train});
  EXPECT_LOWBIT_ERROR(quantize(q.model, QuantizeOptions{.calibration_data = &s.train}), "already quantized");
}

TEST(Workflow, CompareReportsAccuracyAgreementAndEveryLayer) {
  const Trained& s = trained_mlp();
  const QuantizeResult q = quantize(s.model, QuantizeOptions{.calibration_data = &s.train});
  CompareOptions o;
  o.measure_speed = false;
  const CompareResult r = compare(q.model, s.model, s.test, o);
  EXPECT_EQ(r.samples, s.test.size());
  EXPECT_DOUBLE_EQ(r.model_accuracy, evaluate(q.model, s.test).accuracy);
  EXPECT_DOUBLE_EQ(r.against_accuracy, evaluate(s.model, s.test).accuracy);
  EXPECT_GT(r.agreement, 0.95);
  EXPECT_LE(r.agreement, 1.0);
  // The three dense layers and the softmax (Flatten only relabels, so it is skipped).
  ASSERT_EQ(r.layers.size(), 4u);
  EXPECT_EQ(r.layers[0].op, "QDense");
  EXPECT_EQ(r.layers[0].against_op, "Dense");
  EXPECT_GT(r.layers[0].error.sqnr_db, 20.0);
  EXPECT_EQ(r.model_speed.batch1_latency_us, 0.0);  // not measured
  // A model against itself: full agreement, exact layers.
  const CompareResult same = compare(s.model, s.model, s.test, o);
  EXPECT_EQ(same.agreement, 1.0);
  EXPECT_EQ(same.layers[0].error.max_abs, 0.0);
}

TEST(Workflow, ModelInfoListsLayersTensorsAndSizes) {
  const Trained& s = trained_mlp();
  const ModelInfo f = model_info(s.model);
  EXPECT_EQ(f.parameters, 52650);  // 784*64+64 + 64*32+32 + 32*10+10
  EXPECT_EQ(f.tensor_bytes, 52650 * 4);
  ASSERT_EQ(f.outputs.size(), 1u);
  EXPECT_EQ(f.outputs[0].shape, (Shape{-1, 10}));
  const auto dense = std::find_if(f.layers.begin(), f.layers.end(), [](const LayerInfo& l) { return l.name == "dense_1"; });
  ASSERT_NE(dense, f.layers.end());
  EXPECT_EQ(dense->op, "Dense");
  EXPECT_EQ(dense->output_shape, (Shape{-1, 64}));
  EXPECT_EQ(dense->parameters, 784 * 64 + 64);
  ASSERT_EQ(dense->tensors.size(), 2u);
  EXPECT_EQ(dense->tensors[0].shape, (Shape{64, 784}));
  // 4-bit weights: packed s4 codes, two per byte.
  const ModelInfo q = model_info(quantize(s.model, QuantizeOptions{.weight_bits = 4, .calibration_data = &s.train}).model);
  const auto qd = std::find_if(q.layers.begin(), q.layers.end(), [](const LayerInfo& l) { return l.name == "dense_1"; });
  ASSERT_NE(qd, q.layers.end());
  EXPECT_EQ(qd->op, "QDense");
  EXPECT_EQ(qd->tensors[0].dtype, DType::S4);
  EXPECT_EQ(qd->tensors[0].bits, 4);
  EXPECT_EQ(qd->tensors[0].bytes, 64 * 784 / 2);
  EXPECT_LT(q.tensor_bytes, f.tensor_bytes / 6);
  // Bits per weight: float weights 32; 4-bit codes plus an f32 scale and an s32 zero point per row.
  EXPECT_EQ(dense->weights, 784 * 64);
  EXPECT_DOUBLE_EQ(dense->bits_per_weight, 32.0);
  EXPECT_DOUBLE_EQ(f.bits_per_weight, 32.0);
  EXPECT_EQ(qd->weights, 784 * 64);
  EXPECT_DOUBLE_EQ(qd->bits_per_weight, 8.0 * (64 * 392 + 64 * 4 + 64 * 4) / (784 * 64));
  const auto softmax = std::find_if(f.layers.begin(), f.layers.end(), [](const LayerInfo& l) { return l.op == "Softmax"; });
  ASSERT_NE(softmax, f.layers.end());
  EXPECT_EQ(softmax->weights, 0);
}

TEST(Workflow, DefaultsDependOnTheBitWidth) {
  EXPECT_EQ(defaults_for_bits(8).rounding, "nearest");
  EXPECT_EQ(defaults_for_bits(8).weight_scheme, QScheme::Symmetric);
  EXPECT_FALSE(defaults_for_bits(8).lsq);
  EXPECT_EQ(defaults_for_bits(4).rounding, "gptq");
  EXPECT_EQ(defaults_for_bits(4).weight_scheme, QScheme::Symmetric);
  EXPECT_FALSE(defaults_for_bits(4).lsq);
  for (int bits : {3, 2}) {
    EXPECT_EQ(defaults_for_bits(bits).rounding, "gptq");
    EXPECT_EQ(defaults_for_bits(bits).weight_scheme, QScheme::Affine);
    EXPECT_TRUE(defaults_for_bits(bits).lsq);
  }
  // Applied only where not given, GPTQ only with data, affine not in dynamic mode, nothing with a plan.
  QuantizeOptions o{.weight_bits = 3};
  const AppliedDefaults a = apply_bit_width_defaults(o, false, false, true);
  EXPECT_TRUE(a.scheme && a.rounding);
  EXPECT_EQ(o.weight_scheme, QScheme::Affine);
  EXPECT_EQ(o.rounding, "gptq");
  QuantizeOptions given{.weight_bits = 3};
  EXPECT_FALSE(apply_bit_width_defaults(given, true, false, false).scheme);
  EXPECT_EQ(given.rounding, "nearest");
  QuantizeOptions dynamic{.mode = QuantMode::Dynamic, .weight_bits = 3};
  EXPECT_FALSE(apply_bit_width_defaults(dynamic, false, true, true).scheme);
  QuantizeOptions planned{.weight_bits = 3};
  planned.plan = QuantPlan{};
  const AppliedDefaults none = apply_bit_width_defaults(planned, false, false, true);
  EXPECT_FALSE(none.scheme || none.rounding);
}

TEST(Workflow, RunTrainIsBuildTrainEvaluate) {
  const Trained& s = trained_mlp();
  DatasetSplits small{s.data.train.head(3000), s.test};
  TrainRunOptions o;
  o.arch = "784-16-10";
  o.train_samples = 2000;
  o.train.epochs = 1;
  o.train.seed = 4;
  o.metadata["trained_on"] = "test";
  int64_t started_with = 0;
  o.on_start = [&](const Graph& model, int64_t samples) {
    EXPECT_EQ(model.parameter_count(), 784 * 16 + 16 + 16 * 10 + 10);
    started_with = samples;
  };
  const TrainRunResult r = run_train(small, o);
  EXPECT_EQ(started_with, 2000);
  EXPECT_EQ(r.model.metadata.at("trained_on"), "test");
  // The same as the calls by hand, byte for byte.
  Graph by_hand = build_model(parse_arch("784-16-10"), {28, 28}, 10, 4);
  train(by_hand, small.train.head(2000), o.train);
  by_hand.metadata["trained_on"] = "test";
  EXPECT_EQ(serialize_model(r.model), serialize_model(by_hand));
  EXPECT_EQ(r.test.accuracy, evaluate(by_hand, s.test).accuracy);
  EXPECT_GT(r.test.accuracy, 0.5);
}

TEST(Workflow, RunDistillTrainsAStudentAndQuantizesIt) {
  const Trained& s = trained_mlp();
  testing::TempDir dir;
  DatasetSplits small{s.train.head(2000), s.test.head(500)};
  DistillRunOptions o;
  o.student_arch = "784-16-10";
  o.teacher_cache = dir.file("teacher.logits");
  o.train.epochs = 1;
  o.train.distill.temperature = 2;
  o.train.distill.alpha = 0.5f;
  QatRunOptions q;
  q.qat.plan.defaults.weight_bits = 4;
  q.train.epochs = 1;
  q.train.optimizer.learning_rate = 1e-4f;
  q.calibration_samples = 200;
  o.quantize = q;
  bool ready = false, float_done = false;
  o.on_ready = [&](const DistillRunResult& r) {
    ready = true;
    EXPECT_EQ(r.teacher_test.accuracy, evaluate(s.model, small.test).accuracy);
  };
  o.on_float_done = [&](const DistillRunResult& r) { float_done = r.float_test.count == 500; };
  const DistillRunResult r = run_distill(s.model, small, o);
  EXPECT_TRUE(ready && float_done);
  EXPECT_FALSE(r.teacher_cache_hit);
  ASSERT_TRUE(r.qat.has_value());
  EXPECT_TRUE(is_quantized(r.student));
  EXPECT_EQ(serialize_model(r.student), serialize_model(r.qat->model));
  EXPECT_GT(r.qat->agreement, 0.9);
  // Again: the teacher's logits now come from the cache, and the student is the same.
  const DistillRunResult again = run_distill(s.model, small, o);
  EXPECT_TRUE(again.teacher_cache_hit);
  EXPECT_EQ(serialize_model(again.student), serialize_model(r.student));
  // A new student needs epochs; a quantized student is refused.
  o.train.epochs = 0;
  EXPECT_LOWBIT_ERROR(run_distill(s.model, small, o), "a new student needs training epochs");
  o.student = r.student;
  EXPECT_LOWBIT_ERROR(run_distill(s.model, small, o), "the student is not a float model");
}

TEST(Workflow, RunQatDistilsFromATeacherThroughItsCache) {
  const Trained& s = trained_mlp();
  testing::TempDir dir;
  const Dataset train = s.train.head(2000), test = s.test.head(500);
  const Graph student = build_model(parse_arch("784-16-10"), train.sample_shape(), 10, 1);
  QatRunOptions o;
  o.qat.plan.defaults.weight_bits = 4;
  o.train.epochs = 1;
  o.train.optimizer.learning_rate = 1e-4f;
  o.train.distill.temperature = 2;
  o.train.distill.alpha = 0.5f;
  o.calibration_samples = 200;
  o.teacher = &s.model;
  o.teacher_cache = dir.file("teacher.logits");
  int ready = 0;
  o.on_ready = [&](const QatRunResult& r) {
    ++ready;
    EXPECT_EQ(r.float_test.accuracy, evaluate(student, test).accuracy);
    EXPECT_EQ(r.float_test.count, 500);
    EXPECT_EQ(r.report.epochs.size(), 0u);  // before training
  };
  const QatRunResult r = run_qat(student, train, test, o);
  EXPECT_EQ(ready, 1);
  EXPECT_FALSE(r.teacher_cache_hit);
  EXPECT_NE(r.teacher_cache_note.find("no cache yet"), std::string::npos) << r.teacher_cache_note;
  EXPECT_EQ(r.float_test.accuracy, evaluate(student, test).accuracy);
  // The same as the teacher's logits passed by hand in train.distill, byte for byte.
  QatRunOptions by_hand = o;
  by_hand.teacher = nullptr;
  by_hand.teacher_cache.clear();
  by_hand.on_ready = nullptr;
  const TeacherLogits logits = teacher_logits(s.model, train, "");
  by_hand.train.distill.teacher_logits = &logits.logits;
  const QatRunResult hand = run_qat(student, train, test, by_hand);
  EXPECT_TRUE(serialize_model(r.model) == serialize_model(hand.model));
  // Without the teacher the student learns something else; with the cache it learns the same.
  QatRunOptions alone = by_hand;
  alone.train.distill.teacher_logits = nullptr;
  EXPECT_TRUE(serialize_model(run_qat(student, train, test, alone).model) != serialize_model(r.model));
  const QatRunResult again = run_qat(student, train, test, o);
  EXPECT_TRUE(again.teacher_cache_hit);
  EXPECT_EQ(again.teacher_cache_note, "");
  EXPECT_TRUE(serialize_model(again.model) == serialize_model(r.model));
  // One teacher, not two.
  by_hand.teacher = &s.model;
  EXPECT_LOWBIT_ERROR(run_qat(student, train, test, by_hand), "a teacher in the options and another in train.distill");
}

// predict() on the reference MLP with an input scale of its own (not the 1/255 default: the
// graph's scaling node reads 0.002), so a prediction that skipped or guessed the preprocessing
// would show.
TEST(Workflow, PredictGivesEvaluatesClassesAndTheLogitsBehindThem) {
  const Trained& s = trained_mlp();
  Graph model = s.model;
  for (Node& n : model.nodes)
    if (n.name == "image_scale") n.attributes["value_float"] = static_cast<double>(0.002f);
  const PredictResult r = predict(model, s.test, PredictOptions{.batch_size = 96});  // 2000 = 20 * 96 + 80
  ASSERT_EQ(r.logits.shape(), (Shape{2000, 10}));
  ASSERT_EQ(r.classes.size(), 2000u);
  int64_t correct = 0;
  for (int64_t i = 0; i < 2000; ++i) {
    const float* row = r.logits.data<float>() + i * 10;
    EXPECT_EQ(r.classes[i], std::max_element(row, row + 10) - row) << "sample " << i;
    correct += r.classes[i] == s.test.labels[i];
  }
  // evaluate() in the same batches (a kernel may sum in another order for another batch size).
  const EvalReport e = evaluate(model, s.test, 96);
  EXPECT_EQ(static_cast<double>(correct) / 2000, e.accuracy);
  ASSERT_TRUE(r.accuracy.has_value());
  EXPECT_EQ(*r.accuracy, e.accuracy);
  EXPECT_EQ(*predict(model, s.test, PredictOptions{}).accuracy, evaluate(model, s.test).accuracy);  // both 256
  EXPECT_NE(predict(s.model, s.test, PredictOptions{}).logits.data<float>()[0], r.logits.data<float>()[0]);  // the scale counts
  // The first three samples by hand: the bytes in, pixels times 0.002 inside the graph, the logits
  // before the softmax.
  Executor run(model);
  Tensor& x = run.input("image");
  x = Tensor(DType::U8, {3, 28, 28});
  std::copy_n(s.test.images.data<uint8_t>(), x.numel(), x.data<uint8_t>());
  run.forward();
  for (int64_t j = 0; j < x.numel(); ++j)
    ASSERT_EQ(run.value("image_scaled").data<float>()[j], static_cast<float>(x.data<uint8_t>()[j]) * 0.002f) << j;
  const Tensor& logits = run.value(logits_value(model));
  for (int64_t j = 0; j < 30; ++j) EXPECT_NEAR(logits.data<float>()[j], r.logits.data<float>()[j], 1e-5) << j;
  // The raw batch: the same images as a u8 tensor give the same logits, and no accuracy.
  const PredictResult raw = predict(model, s.test.images, PredictOptions{.batch_size = 96});
  EXPECT_EQ(raw.classes, r.classes);
  ASSERT_EQ(raw.logits.shape(), r.logits.shape());
  EXPECT_TRUE(std::equal(r.logits.data<float>(), r.logits.data<float>() + r.logits.numel(), raw.logits.data<float>()));
  EXPECT_FALSE(raw.accuracy.has_value());
  // A softmax model's classes agree with train.h's predict_classes(); an empty batch gives [0, classes].
  EXPECT_EQ(r.classes, predict_classes(model, s.test, 96));
  EXPECT_EQ(predict(model, Tensor(DType::U8, {0, 28, 28})).logits.shape(), (Shape{0, 10}));
}

TEST(Workflow, PredictorKeepsItsPlanAndGivesPredictsResults) {
  const Trained& s = trained_mlp();
  const PredictResult all = predict(s.model, s.test);
  Predictor predictor(s.model, PredictOptions{.batch_size = 96});
  for (int64_t n : {1, 7, 300, 1}) {  // batches of any size, in any order, on one plan
    const PredictResult r = predictor.predict(s.test.head(n).images);
    ASSERT_EQ(r.logits.shape(), (Shape{n, 10}));
    for (int64_t j = 0; j < r.logits.numel(); ++j) ASSERT_NEAR(r.logits.data<float>()[j], all.logits.data<float>()[j], 1e-5) << j;
    EXPECT_EQ(r.classes, std::vector<int32_t>(all.classes.begin(), all.classes.begin() + n));
    EXPECT_FALSE(r.accuracy.has_value());
  }
  EXPECT_EQ(predictor.predict(Tensor(DType::U8, {0, 28, 28})).logits.shape(), (Shape{0, 10}));
  EXPECT_LOWBIT_ERROR(predictor.predict(Tensor(DType::U8, {2, 14, 14})), "the batch has [2, 14, 14]");
  EXPECT_LOWBIT_ERROR(Predictor(s.model, PredictOptions{.batch_size = 0}), "batch size must be at least 1");
}

TEST(Workflow, PredictRefusesAWrongInputAndNamesIt) {
  const Trained& s = trained_mlp();
  const auto refused = [&](const auto& input, const std::string& needle) {
    try {
      predict(s.model, input, PredictOptions{});
      ADD_FAILURE() << "expected an error containing '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused(Tensor(DType::U8, {4, 14, 14}), "input 'image' takes a batch of shape [N, 28, 28], the batch has [4, 14, 14]");
  refused(Tensor(DType::U8, {784}), "input 'image' takes a batch of shape [N, 28, 28], the batch has [784]");
  refused(Tensor(DType::U8, {2, 784}), "the batch has [2, 784]");
  refused(Tensor(DType::F32, {4, 28, 28}), "the batch for input 'image' (u8) is f32; expected u8 pixel values");
  Dataset small;
  small.images = Tensor(DType::U8, {2, 14, 14});
  small.labels = {0, 1};
  small.num_classes = 2;
  refused(small, "the model's input 'image' expects samples of shape [28, 28], the data has [14, 14]");
}

TEST(Workflow, SavePredictionsWritesOneCsvLinePerSample) {
  testing::TempDir dir;
  PredictResult r;
  r.classes = {3, 0, 7};
  const std::vector<int32_t> labels = {3, 1, 7};
  save_predictions(r, labels, dir.file("p.csv"));
  EXPECT_EQ(testing::read_bytes(dir.file("p.csv")), "index,class,label\n0,3,3\n1,0,1\n2,7,7\n");
  save_predictions(r, {}, dir.file("p.csv"));  // replaces it
  EXPECT_EQ(testing::read_bytes(dir.file("p.csv")), "index,class\n0,3\n1,0\n2,7\n");
  EXPECT_LOWBIT_ERROR(save_predictions(r, std::vector<int32_t>{1, 2}, dir.file("q.csv")), "2 labels for 3 predictions");
  EXPECT_LOWBIT_ERROR(save_predictions(r, labels, dir.file("no/dir/p.csv")), "cannot write");
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.csv")));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);  // p.csv, no temporary file
}

}  // namespace
}  // namespace lowbit
