// lowbit/train.h - initializers, optimizers, the training loop and evaluation.
//
//   lowbit::DatasetSplits data = lowbit::load_dataset_dir(lowbit::default_dataset_dir());
//   lowbit::Graph model = lowbit::build_model(lowbit::parse_arch("784-64-32-10"), data.train.sample_shape(),
//                                             data.train.num_classes, /*seed=*/0);
//   lowbit::TrainOptions options;                       // Adam 1e-3, batch 32, 10 epochs
//   lowbit::TrainReport report = lowbit::train(model, data.train, options);
//   lowbit::EvalReport test = lowbit::evaluate(model, data.test);   // test.accuracy in [0, 1]
//
// Training minimises softmax cross-entropy (or, given a teacher, the distillation loss). A model whose output comes from a Softmax node is
// trained on that node's input (the logits) with the fused, numerically stable loss; the Softmax
// stays in the saved model for inference. Models built from a description take the image bytes
// (u8) and scale them in the graph; a model with a float input gets the bytes scaled by its
// "input_scale" metadata (1/255 by default) when batches are assembled.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowbit/dataset.h"
#include "lowbit/executor.h"
#include "lowbit/graph.h"
#include "lowbit/random.h"

namespace lowbit {

// ---- Initializers ------------------------------------------------------------------------------
enum class Init { GlorotUniform, HeNormal, HeUniform, Zeros };
Init init_from_name(const std::string& name);  // "glorot_uniform", "he_normal", "he_uniform", "zeros"
const char* name_of(Init init) noexcept;
// Glorot uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (the Keras default).
// He normal: N(0, 2 / fan_in); He uniform: U(-a, a), a = sqrt(6 / fan_in).
void initialize(Tensor& tensor, Init init, int64_t fan_in, int64_t fan_out, Rng& rng);

// ---- Optimizers --------------------------------------------------------------------------------
struct OptimizerOptions {
  std::string name = "adam";  // "adam" or "sgd"
  float learning_rate = 1e-3f;
  float momentum = 0.0f;      // sgd
  float beta1 = 0.9f;         // adam, Keras defaults
  float beta2 = 0.999f;
  float epsilon = 1e-7f;
  // Learning-rate schedule over the whole run: "constant", or "cosine" (decays from learning_rate
  // to 0 along half a cosine, per step: lr_t = lr * (1 + cos(pi * t / T)) / 2, as PyTorch's
  // CosineAnnealingLR with eta_min = 0 and T_max = all steps).
  std::string schedule = "constant";
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Applies one update to every parameter from its gradient.
  void step(std::vector<Parameter>& parameters) { step(parameters, 0, 1); }
  // Updates only the part-th of `parts` pieces of every parameter, piece(n, part, parts), and that
  // piece of the state: data-parallel ranks on one machine split the update this way (as ZeRO's
  // stage 1) and exchange the pieces. The pieces' values are those of a whole step.
  virtual void step(std::vector<Parameter>& parameters, int part, int parts) = 0;
  // Elements [first, second) of an n-element parameter: as even as possible, in rank order.
  static std::pair<int64_t, int64_t> piece(int64_t n, int part, int parts) {
    return {n * part / parts, n * (part + 1) / parts};
  }
  virtual void set_learning_rate(float learning_rate) = 0;  // used by schedules
  // Everything step() carries from one call to the next (moments, step count), as named tensors
  // (checkpoints); set_state() puts it back for `parameters` (Error(Format) naming a tensor that
  // does not fit them).
  virtual std::map<std::string, Tensor> state(const std::vector<Parameter>& parameters) const = 0;
  virtual void set_state(const std::map<std::string, Tensor>& state, const std::vector<Parameter>& parameters) = 0;
  static std::unique_ptr<Optimizer> create(const OptimizerOptions& options);  // throws for an unknown name
};

// SGD with momentum (Keras form): v = momentum * v - lr * g;  w = w + v.
class Sgd final : public Optimizer {
 public:
  explicit Sgd(float learning_rate, float momentum = 0.0f) : lr_(learning_rate), momentum_(momentum) {}
  using Optimizer::step;
  void step(std::vector<Parameter>& parameters, int part, int parts) override;
  void set_learning_rate(float learning_rate) override { lr_ = learning_rate; }
  std::map<std::string, Tensor> state(const std::vector<Parameter>& parameters) const override;
  void set_state(const std::map<std::string, Tensor>& state, const std::vector<Parameter>& parameters) override;

 private:
  float lr_, momentum_;
  std::vector<std::vector<float>> velocity_;
};

// Adam (Kingma & Ba): m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
// w = w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + epsilon).
class Adam final : public Optimizer {
 public:
  Adam(float learning_rate, float beta1, float beta2, float epsilon)
      : lr_(learning_rate), beta1_(beta1), beta2_(beta2), epsilon_(epsilon) {}
  using Optimizer::step;
  void step(std::vector<Parameter>& parameters, int part, int parts) override;
  void set_learning_rate(float learning_rate) override { lr_ = learning_rate; }
  std::map<std::string, Tensor> state(const std::vector<Parameter>& parameters) const override;
  void set_state(const std::map<std::string, Tensor>& state, const std::vector<Parameter>& parameters) override;

 private:
  float lr_, beta1_, beta2_, epsilon_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

// ---- Training and evaluation -------------------------------------------------------------------
struct TrainProgress {
  int epoch = 0, epochs = 0;         // 1-based epoch
  int64_t batch = 0, batches = 0;    // batches done in this epoch
  double loss = 0, accuracy = 0;     // running means over this epoch
  double elapsed_seconds = 0;        // since training started
  bool epoch_done = false;
  double val_loss = -1, val_accuracy = -1;  // set when epoch_done and a validation split exists
};

// Hooks into the training loop; quantization-aware training (qat.h) uses them to run its observers.
// `step` counts optimizer steps from 0.
class TrainHooks {
 public:
  virtual ~TrainHooks() = default;
  // Once, before the first step: the parameters the optimizer will update (e.g. to set their
  // learning_rate_scale).
  virtual void on_start(std::vector<Parameter>& /*parameters*/) {}
  virtual void before_forward(int64_t /*step*/) {}
  // The training executor after the forward pass: every value of the batch can be read.
  virtual void after_forward(const Executor& /*run*/, int64_t /*step*/) {}
  virtual void after_update(int64_t /*step*/) {}
};

// Knowledge distillation (Hinton et al. 2015): the loss becomes the DistillationLoss op,
//   alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels).
// The teacher's logits come from `teacher_logits` (computed once, see distill.h) or, if that is null,
// from running `teacher` on every batch.
struct DistillSettings {
  const Tensor* teacher_logits = nullptr;  // [training samples, classes]; row i belongs to sample i
  const Graph* teacher = nullptr;
  float temperature = 4.0f;
  float alpha = 0.7f;
  bool enabled() const { return teacher_logits || teacher; }
};

// ---- Checkpoints -------------------------------------------------------------------------------
struct EpochReport {
  int epoch = 0;
  double loss = 0, accuracy = 0, val_loss = -1, val_accuracy = -1, seconds = 0;
};

// What the training loop carries from one step to the next besides the model's own tensors (the
// weights, BatchNorm statistics and QAT observers are initializers of the model). A run resumed
// from it gives the same model bytes as a run never stopped (same seed, data, options, threads).
struct TrainState {
  int epoch = 1;                 // the epoch of the next step, 1-based; epochs + 1 once training is done
  int64_t batch = 0;             // the next batch of that epoch; > 0: the epoch's order is shuffled already
  uint64_t rng = 0;              // the shuffling generator (Rng::state)
  std::vector<uint32_t> order;   // the sample order: each epoch shuffles the previous epoch's
  double loss_sum = 0;           // the epoch's running totals (loss summed over samples)
  int64_t correct = 0, seen = 0;
  std::vector<EpochReport> history;  // the epochs done (the best so far: the highest val_accuracy)
  double seconds = 0;                // training time up to this state
  std::map<std::string, Tensor> optimizer;           // Optimizer::state
  std::map<std::string, float> learning_rate_scales;  // Parameter::learning_rate_scale, by parameter
  // The options, data and thread count that shape the model bytes, one "key=value" per line: a
  // checkpoint resumes only a run whose settings are the same.
  std::string settings;
};

// Where checkpoints go: train() calls save() every TrainOptions::checkpoint_every_* and when it is
// stopped, and, given resume, load() once before the first step. CheckpointFile (checkpoint.h) is
// the file implementation.
class Checkpointer {
 public:
  virtual ~Checkpointer() = default;
  // The last saved state with the model's tensors copied into `model` (whose graph must be the
  // checkpoint's: Error(InvalidArgument) otherwise), or nullopt when nothing was saved yet.
  virtual std::optional<TrainState> load(Graph& model) = 0;
  virtual void save(const Graph& model, const TrainState& state) = 0;
  // After an epoch whose validation accuracy is the best so far: that model.
  virtual void save_best(const Graph& /*model*/, const TrainState& /*state*/) {}
  virtual std::string where() const = 0;  // for messages: the file
};

// ---- Data parallelism ---------------------------------------------------------------------------
// The ranks of a data-parallel run as the training loop sees them: MPI processes, or threads of
// one process (LocalGroup).
// Memory that the ranks of one machine read and write directly, made by Communicator::share():
// each rank writes its own part, and after sync() (a barrier) every rank sees every rank's writes.
class SharedFloats {
 public:
  virtual ~SharedFloats() = default;
  virtual std::span<float> values() = 0;
  virtual void sync() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Every rank gives `mine` (the same length on every rank) and receives everyone's, concatenated
  // in rank order, in `all` (size() * mine.size() values). `mine` may be this rank's part of
  // `all` (then it is not copied).
  virtual void all_gather(std::span<const float> mine, std::span<float> all) = 0;
  // The same for doubles (counts and sums that floats would round: calibration histograms).
  virtual void all_gather(std::span<const double> mine, std::span<double> all) = 0;
  // The same, started now and finished by wait(handle); neither span may be touched in between.
  // Every rank starts its gathers in the same order. progress() lets started gathers advance (MPI
  // moves them only inside MPI calls). By default a gather is done when it starts.
  virtual int start_all_gather(std::span<const float> mine, std::span<float> all) {
    all_gather(mine, all);
    return -1;
  }
  virtual void wait(int /*handle*/) {}
  virtual void progress() {}
  // `count` floats shared by every rank (zeros; every rank calls it, with the same count), or
  // nullptr when the ranks share no memory (they run on several machines, or the machine's shared
  // memory cannot hold that much). By default none.
  virtual std::unique_ptr<SharedFloats> share(size_t /*count*/) { return nullptr; }
};

// Ranks as threads of one process: member(r) is rank r's Communicator; each rank's thread calls
// train() with it (a model of its own, built with the same seed). Used by the tests, and by
// anyone who wants the sharded arithmetic of a multi-process run without MPI.
class LocalGroup {
 public:
  explicit LocalGroup(int size);
  ~LocalGroup();
  Communicator& member(int rank);
  int size() const;
  struct Shared;  // (opaque)

 private:
  std::unique_ptr<Shared> shared_;
  std::vector<std::unique_ptr<Communicator>> members_;
};

struct TrainOptions {
  int epochs = 10;
  int batch_size = 32;
  OptimizerOptions optimizer;
  uint64_t seed = 0;               // shuffling and dropout masks; initial weights come from build_model's seed
  double validation_split = 0.0;   // the last fraction of the training data, held out (as Keras)
  std::function<void(const TrainProgress&)> on_progress;  // called after every batch
  DistillSettings distill;         // off unless a teacher is given
  TrainHooks* hooks = nullptr;
  // Checkpoints (none unless `checkpoints` is set): one every checkpoint_every_steps optimizer
  // steps when that is > 0, else at the end of every checkpoint_every_epochs-th epoch; one when
  // training is stopped; one when it ends. With resume, training continues from the saved state
  // when there is one (and starts afresh when there is none).
  Checkpointer* checkpoints = nullptr;
  int64_t checkpoint_every_steps = 0;
  int checkpoint_every_epochs = 1;
  bool resume = false;
  // Set (e.g. by a signal handler) to stop at the next step boundary: a checkpoint is written if
  // there is a Checkpointer, and train() throws Error(Interrupted) saying where training stopped.
  const std::atomic<bool>* stop = nullptr;
  // Data parallelism. Every global batch is cut into `shards` contiguous parts (sizes as even as
  // possible); rank r of the communicator's `size` ranks trains on shards [r * shards / size,
  // (r + 1) * shards / size) (`shards` must be a multiple of the number of ranks). Each shard's
  // forward starts from the same model; its gradient (weighted by its share of the batch), the
  // buffers its forward updated (BatchNorm running statistics, QAT observers) and its loss are
  // gathered from all ranks and combined in one pairwise order over the shards, so that the model
  // bytes depend on `shards` and never on the number of ranks. shards = 1 without a communicator
  // is plain training; with one rank and shards > 1, that rank computes every shard in turn.
  int shards = 1;
  Communicator* communicator = nullptr;
  // Gradients travel in buckets of at least this many bytes, in the order the backward pass
  // completes them; each bucket is sent as soon as the last shard of this rank has it, while the
  // backward pass goes on through the earlier layers (as PyTorch DDP's bucket_cap_mb). A bucket
  // larger than the model sends everything after the backward pass. The bytes never depend on it.
  int64_t bucket_bytes = 1 << 20;
  // When every rank runs on one machine (Communicator::share gives memory), the backward pass
  // writes each shard's gradients straight into memory all ranks read; after a barrier each rank
  // sums and applies its piece of every parameter, and after a second one copies the others'
  // pieces (nothing is sent: buckets play no part then). False: always send.
  bool shared_memory = true;
};

struct TrainReport {
  std::vector<EpochReport> epochs;
  double seconds = 0;            // wall time of the training loop (all runs of a resumed one)
  int64_t resumed_at_step = -1;  // the optimizer step a checkpoint resumed from, or -1
  int64_t steps = 0;             // optimizer steps in all
  // Data-parallel runs: seconds this rank spent in communication calls rather than computing
  // (moving the other ranks' contributions, or waiting for them), and gradient buckets per step.
  double communication_seconds = 0;
  int buckets = 0;
  bool shared_memory = false;  // the gradients were shared in memory (ranks of one machine), not sent
};

TrainReport train(Graph& model, const Dataset& data, const TrainOptions& options);

struct EvalReport {
  double accuracy = 0;  // fraction of correct top-1 predictions
  double loss = 0;      // mean cross-entropy
  int64_t count = 0;
};
EvalReport evaluate(const Graph& model, const Dataset& data, int batch_size = 256);
// The logits (see logits_value) of every sample, [data.size(), classes].
Tensor compute_logits(const Graph& model, const Dataset& data, int batch_size = 256);
// Top-1 class of every sample.
std::vector<int32_t> predict_classes(const Graph& model, const Dataset& data, int batch_size = 256);
// The inference loop under the three above: the first `samples` samples of `data` (labels are
// not needed) in batches of batch_size through `run` (an executor of `model`, which a caller may
// keep between calls), each batch gathered by gather_batch, and visit(begin, count, logits) with
// the value `logits` of every batch.
void run_batches(Executor& run, const Graph& model, const Dataset& data, int64_t samples, int batch_size,
                 const std::string& logits, const std::function<void(int64_t begin, int64_t count, const Tensor& logits)>& visit);

// Samples `indices` of `data` as the batch of `model`'s input `images` (check_compatible: the
// input's sample shape is the images' shape, or that with a leading channel of 1, as [1, 28, 28]
// for 28x28 images): the image bytes themselves when `images` is u8 (models that scale their input
// in the graph), else floats scaled by input_scale(model); f32 samples as they are (into an f32
// input only: Error(InvalidArgument) otherwise).
void gather_batch(const Dataset& data, std::span<const uint32_t> indices, const Graph& model, Tensor& images,
                  Tensor* labels = nullptr);
// Samples `indices` of `data` into every input of `run` (an executor of `model`): the named
// inputs of data.inputs by name (dtype and sample shape checked; Error(InvalidArgument) naming the
// input the data lacks), or, for images, the model's one input through gather_batch.
void feed_batch(const Dataset& data, std::span<const uint32_t> indices, const Graph& model, Executor& run);

// The value holding the logits of a classifier: the input of a trailing Softmax, else the output.
std::string logits_value(const Graph& model);
// Scale from image bytes to the input of a float-input model: metadata "input_scale", 1/255 if
// absent (models whose input is u8 scale in the graph and ignore it).
float input_scale(const Graph& model);

}  // namespace lowbit
