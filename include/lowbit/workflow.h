// lowbit/workflow.h - the CLI's steps as library calls: quantize a model (every mode, partial
// selection by name or by measured sensitivity, accuracy-driven search, plan files), compare
// two models (accuracy, agreement, per-layer error, speed), and quantization-aware training from
// calibration to the integer model (run_qat); training (run_train) and distillation (run_distill);
// what a model holds (model_info); a model's predictions (predict). Each takes an options struct
// and returns a result struct; nothing here prints, and nothing reads or writes files but the
// teacher's logit cache and save_predictions, so the CLI, Python and programs share one
// implementation.
//
//   lowbit::QuantizeOptions q;                      // full int8, per-channel symmetric weights
//   q.weight_bits = 4;
//   q.calibration_data = &data.train;               // calibrates here (or pass q.ranges)
//   lowbit::QuantizeResult r = lowbit::quantize(model, q);
//   lowbit::CompareResult c = lowbit::compare(r.model, model, data.test);
//   // c.model_accuracy, c.against_accuracy, c.agreement, c.layers[i].error.sqnr_db, ...
//   lowbit::PredictResult p = lowbit::predict(r.model, data.test);
//   // p.logits [N, classes], p.classes[i], p.accuracy
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowbit/calibration.h"
#include "lowbit/dataset.h"
#include "lowbit/distill.h"
#include "lowbit/graph.h"
#include "lowbit/qat.h"
#include "lowbit/quant_search.h"
#include "lowbit/quantize.h"
#include "lowbit/train.h"

namespace lowbit {

struct QuantizeOptions {
  QuantMode mode = QuantMode::Full;
  int weight_bits = 8;                        // 8, 6, 4, 3 or 2 (activations are 8-bit)
  bool per_channel = true;
  int group_size = 0;                         // 32, 64 or 128: block weights (LayerRule::group_size)
  QScheme weight_scheme = QScheme::Symmetric;
  std::string dynamic_granularity = "row";    // dynamic mode: one activation range per "row" or "tensor"
  QScheme activation_scheme = QScheme::Affine;  // s8 activation grids (QuantPlan::activation_scheme)
  // Activation ranges: given (e.g. load_calibration), or calibrated here on the first
  // calibration_samples of calibration_data with calibration_method (a search calibrates with
  // every method it may try).
  std::map<std::string, Calibration> ranges;
  const Dataset* calibration_data = nullptr;  // a training split; its end is the validation split
  std::string calibration_method = "minmax";
  // Weight rounding: "nearest", or "gptq" (error feedback through each Dense / Conv2D layer's input
  // Hessian on the calibration samples; needs calibration_data, also in dynamic mode).
  std::string rounding = "nearest";
  bool act_order = false;                     // GPTQ: columns by decreasing Hessian diagonal (LayerRule::act_order)
  // SmoothQuant before static quantization (smooth_activations in lowbit/quantize.h, on the first
  // calibration_samples of calibration_data): alpha in [0, 1]; absent: none. Full and partial
  // modes only (dynamic mode quantizes activations per row at run time).
  std::optional<double> smooth_alpha;
  int64_t calibration_samples = 1000;
  int64_t validation_samples = 10000;         // the last ones of calibration_data, never test data
  // Partial mode: the layers to quantize (names or fnmatch patterns, comma-separated); empty:
  // measure each layer's sensitivity and keep the keep_float most sensitive ones in float.
  std::string layers;
  int keep_float = 1;
  // Layers kept in float whatever the mode (names or patterns, comma-separated; as ONNX Runtime's
  // nodes_to_exclude), e.g. "*.heads" for the attention of the transformer blocks lowbit builds.
  // Not with a given plan or a search (they decide every layer).
  std::string float_layers;
  // Search per-layer rules within this accuracy drop (percentage points on the validation split).
  std::optional<double> max_drop;
  std::string objective = "size";             // search: "size" or "speed"
  double time_budget_seconds = 60;
  std::optional<QuantPlan> plan;              // apply this plan as it is (e.g. from load_plan)
  std::function<void(const std::string&)> log;  // progress lines of the search, optional
  // Given, the float and the quantized model are both evaluated on it (QuantizeResult's
  // float_test and test): a test split, which no decision above ever sees.
  const Dataset* test_data = nullptr;
};

struct QuantizeResult {
  Graph model;                                 // the quantized model
  QuantPlan plan;                              // the plan applied (save_plan writes it)
  std::vector<LayerSensitivity> sensitivity;   // partial selection by sensitivity, or the search's
  int64_t validation_samples = 0;              // size of the validation split used (0: none)
  std::optional<SearchResult> search;          // with max_drop
  std::vector<std::string> smoothed_layers;    // with smooth_alpha: the LayerNorms smoothing scaled
  bool met = true;                             // false when a search found no plan within max_drop
  std::optional<EvalReport> float_test, test;  // with test_data: the float model and the quantized one
};

// Throws Error(InvalidArgument) for an already quantized model, or when data is needed (static
// modes without ranges, sensitivity, search) and calibration_data is null.
QuantizeResult quantize(const Graph& model, const QuantizeOptions& options);
// Whether quantize() with these options may read calibration_data (to calibrate, to choose layers
// by sensitivity, or to search), so that a caller loads data only then.
bool quantize_needs_data(const QuantizeOptions& options);

// The defaults that depend on the weight bit width, for the options a user did not give (the CLI
// and the Python package apply them and say what they chose). Measured on the reference MLP
// (README): below 5 bits GPTQ rounding keeps most of the accuracy round-to-nearest loses; below 4
// bits an affine grid does better than a symmetric one, and quantization-aware training needs
// learned step sizes (LSQ): min-max observers leave a 2-bit student 7 points below float.
struct BitWidthDefaults {
  std::string rounding = "nearest";          // quantize: "gptq" at <= 4 bits (it needs calibration data)
  QScheme weight_scheme = QScheme::Symmetric;  // quantize: affine at <= 3 bits (not in dynamic mode)
  bool lsq = false;                          // qat, distill: learned step sizes at <= 3 bits
};
BitWidthDefaults defaults_for_bits(int weight_bits);
// Applies defaults_for_bits(o.weight_bits) to the weight grid and the rounding of `o` where the
// caller did not give them (`scheme_given`, `rounding_given`), unless a plan or a search decides
// per layer: affine not in dynamic mode (its per-row layers are symmetric), GPTQ only when the
// caller has calibration data (`has_data`). Says what it changed.
struct AppliedDefaults {
  bool scheme = false, rounding = false;
};
AppliedDefaults apply_bit_width_defaults(QuantizeOptions& o, bool scheme_given, bool rounding_given, bool has_data);

struct LayerError {
  std::string layer, op, against_op;
  ErrorMetrics error;  // of the layer's output in `model` against the same value in `against`
};

struct Speed {
  double batch1_latency_us = 0;            // median of 300 single-image runs
  double batch256_images_per_second = 0;   // best of 15 x 20 runs of a 256-image batch
};
Speed measure_speed(const Graph& model, const Dataset& data);

struct CompareOptions {
  int64_t layer_samples = 256;  // per-layer errors on this many test samples
  bool measure_speed = true;
};

struct CompareResult {
  int64_t samples = 0;
  double model_accuracy = 0, against_accuracy = 0;
  double agreement = 0;           // share of samples on which both predict the same class
  std::vector<int32_t> model_classes, against_classes;  // each test sample's top-1 class (the first on ties)
  std::vector<LayerError> layers; // every value both models compute (layout-only ops skipped)
  Speed model_speed, against_speed;
};
CompareResult compare(const Graph& model, const Graph& against, const Dataset& test, const CompareOptions& options = {});

// A model from a file: a native model (.lbm), or an ONNX model (a name ending in .onnx), which is
// imported (lowbit/onnx.h). Every CLI command that takes --model reads it this way.
Graph open_model(const std::string& path);

// What a model holds, layer by layer (`lowbit info`): each node's output shape and the tensors it
// reads from the model (weights, scales, codes) with their dtype, bits and bytes.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  int bits = 32;
  int64_t bytes = 0;
};
struct LayerInfo {
  std::string name, op;
  Shape output_shape;
  int64_t parameters = 0, bytes = 0;  // of its tensors
  std::vector<TensorInfo> tensors;
  // Layers with weights (Dense, Conv2D and their quantized forms): how many weights, and the bits
  // each costs in storage: its code plus its share of the scales and zero points (not the bias,
  // not the activation parameters). 32 for float weights; 0 for layers without weights.
  int64_t weights = 0;
  double bits_per_weight = 0;
};
struct ModelInfo {
  std::string name;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  int64_t parameters = 0, tensor_bytes = 0;
  int64_t weights = 0;           // over the layers with weights
  double bits_per_weight = 0;    // their storage bits (as LayerInfo's) over all their weights
  std::vector<LayerInfo> layers;
};
ModelInfo model_info(const Graph& model);

// A classifier's predictions, as `lowbit predict` makes them: the logits and the top-1 class of
// every sample, computed batch by batch with evaluate()'s preprocessing (the u8 images scaled by
// the model's "input_scale" metadata), so that the classes of a Dataset score exactly
// evaluate()'s accuracy. The input is a Dataset, or a raw batch [N, ...the sample shape of the
// model's input, or that without a leading channel of 1]: u8 pixel values as a Dataset holds them, or, for a model with an f32 input, f32
// values fed as they are.
struct PredictOptions {
  int batch_size = 256;
};
struct PredictResult {
  Tensor logits;                 // f32 [N, classes] (the input of a trailing Softmax)
  std::vector<int32_t> classes;  // per sample, the argmax of its logits (the first on ties)
  std::optional<double> accuracy;  // the Dataset form: share of samples whose class is their label
};
// Throws Error(InvalidArgument) naming the model's input when the samples' shape is not the one
// it takes, or when a raw batch is neither u8 nor (for an f32 input) f32.
PredictResult predict(const Graph& model, const Dataset& data, const PredictOptions& options = {});
PredictResult predict(const Graph& model, const Tensor& images, const PredictOptions& options = {});
// predict() on raw batches, call after call, with the model planned once: the executor (with the
// packed weights its plan holds) is kept, so a call costs its batch's compute, as a served model
// should (a single 28x28 image through the reference MLP: microseconds instead of the planning's
// tens). predict(model, images) is Predictor(model, options).predict(images). One Predictor runs
// on one thread at a time; make one per thread (they share the weights).
//   lowbit::Predictor predictor(model);
//   lowbit::PredictResult r = predictor.predict(batch);   // u8 [N, 28, 28], as predict()
class Predictor {
 public:
  explicit Predictor(const Graph& model, const PredictOptions& options = {});
  ~Predictor();
  Predictor(const Predictor&) = delete;
  Predictor& operator=(const Predictor&) = delete;
  PredictResult predict(const Tensor& images);

 private:
  Graph model_;  // shares the initializers' storage with the caller's graph
  PredictOptions options_;
  std::string logits_;
  int64_t classes_ = 0;
  std::unique_ptr<Executor> run_;
};
// Writes the predictions as CSV, atomically: a header line, then one line per sample,
// "index,class,label" (labels: one per sample, as Dataset::labels), or "index,class" when
// `labels` is empty. Throws Error(Io) naming the path.
void save_predictions(const PredictResult& predictions, std::span<const int32_t> labels, const std::string& path);

// Quantization-aware training from a float model, as `lowbit qat` (and `lowbit distill --bits`)
// run it: evaluate the float model on `test`, calibrate on the first calibration_samples of
// `train`, insert fake quantization, train, convert to the integer model, and measure the two on
// `test`. With a teacher, training distils from it (QAT + distillation): its logits for `train`
// are computed once (teacher_logits, distill.h), read from and written to the cache file
// teacher_cache when that is not empty, and weighed with train.distill's temperature and alpha.
// (run_distill passes its teacher in train.distill instead; give one or the other.)
struct QatRunResult;
struct QatRunOptions {
  QatOptions qat;
  TrainOptions train;
  int64_t calibration_samples = 1000;
  const Graph* teacher = nullptr;  // must outlive the call
  std::string teacher_cache;       // "" for none (the logits are still computed once, in memory)
  // Called once the float model's test accuracy (and the teacher's logits) are known, before
  // calibration and training.
  std::function<void(const QatRunResult&)> on_ready;
};
struct QatRunResult {
  Graph fake_quantized;    // the trained model with fake quantization (float arithmetic)
  Graph model;             // the integer model converted from it
  TrainReport report;
  EvalReport float_test;   // the float model on `test`
  bool teacher_cache_hit = false;
  std::string teacher_cache_note;  // why the teacher's cache was (re)built, if it was
  int64_t test_samples = 0;
  double fake_quantized_accuracy = 0, accuracy = 0;
  double agreement = 0;    // share of test samples on which both predict the same class
  double max_logit_difference = 0, mean_logit_difference = 0;
};
QatRunResult run_qat(const Graph& float_model, const Dataset& train, const Dataset& test, const QatRunOptions& options);

// Training a new model, as `lowbit train` runs it: build the model that `arch` describes (layer
// sizes "784-64-32-10" or a JSON description file) for data.train's samples and classes, with
// train.seed; train it on the first train_samples of data.train (0: all); evaluate it on data.test.
struct TrainRunOptions {
  std::string arch = "784-64-32-10";
  int64_t train_samples = 0;
  TrainOptions train;
  std::map<std::string, std::string> metadata;  // added to the model's (e.g. "trained_on")
  // Called once the model is built, before training, with it and the number of training samples.
  std::function<void(const Graph& model, int64_t samples)> on_start;
};
struct TrainRunResult {
  Graph model;
  TrainReport report;
  EvalReport test;
};
TrainRunResult run_train(const DatasetSplits& data, const TrainRunOptions& options);

// Knowledge distillation, as `lowbit distill` runs it: the teacher's logits (from the cache file
// when it holds this teacher's logits for this data, else computed once and written there; with
// no cache file the teacher runs on every batch), the teacher's test accuracy, a float phase that
// trains the student on the teacher's soft predictions (train.distill's temperature and alpha),
// and, with `quantize`, a quantization-aware phase (run_qat with the same teacher) that ends in
// the integer student. Reads and writes only the teacher's cache file.
struct DistillRunResult;
struct DistillRunOptions {
  // The student: a float model to fine-tune, or else a new one built from `student_arch` with
  // train.seed. A new student needs train.epochs > 0.
  std::optional<Graph> student;
  std::string student_arch = "784-64-32-10";
  std::string teacher_cache;  // "" for none
  int64_t train_samples = 0;  // the first N of data.train (0: all)
  TrainOptions train;         // the float phase (epochs may be 0 for a given student)
  std::optional<QatRunOptions> quantize;  // its train: epochs, learning rate, progress
  std::map<std::string, std::string> metadata;  // added to the float student's
  // Called once the teacher is ready (logits and test accuracy known), before any training.
  std::function<void(const DistillRunResult&)> on_ready;
  // Called after the float phase (float_test known), before the quantization-aware phase.
  std::function<void(const DistillRunResult&)> on_float_done;
};
struct DistillRunResult {
  Graph student;           // the integer student with `quantize`, else the float one
  int64_t parameters = 0;  // of the float student
  bool teacher_cache_hit = false;
  std::string teacher_cache_note;  // why the cache was (re)built, if it was
  EvalReport teacher_test, float_test;  // float_test: the float student after its phase
  TrainReport report;                   // the float phase (no epochs when it had none)
  std::optional<QatRunResult> qat;      // the quantization-aware phase
};
DistillRunResult run_distill(const Graph& teacher, const DatasetSplits& data, const DistillRunOptions& options);

}  // namespace lowbit
