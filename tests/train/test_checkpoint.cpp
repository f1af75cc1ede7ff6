// Training checkpoints: a run resumed from the checkpoint of any step ends with the same model
// bytes as a run never stopped (Adam with a cosine schedule, dropout and BatchNorm; SGD with
// momentum; LSQ quantization-aware training), the stop flag, and checkpoints that do not fit.
#include <atomic>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::TempDir;

using testing::quadrant_images;

const char* kDropoutBatchNorm = R"({"layers": [{"type": "flatten"}, {"type": "dense", "units": 16}, {"type": "batchnorm"},
  {"type": "relu"}, {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 4}, {"type": "softmax"}]})";

// Saves through a CheckpointFile and keeps the bytes of every checkpoint it wrote.
class Recorder final : public Checkpointer {
 public:
  explicit Recorder(const std::string& path) : file_(path) {}
  std::optional<TrainState> load(Graph& model) override { return file_.load(model); }
  void save(const Graph& model, const TrainState& state) override {
    file_.save(model, state);
    snapshots.push_back(testing::read_bytes(file_.where()));
    steps.push_back(state.seen);
  }
  std::string where() const override { return file_.where(); }
  std::vector<std::string> snapshots;
  std::vector<int64_t> steps;

 private:
  CheckpointFile file_;
};

struct TrainingRun {
  const char* arch;
  TrainOptions options;
};

std::vector<TrainingRun> runs() {
  TrainingRun adam{kDropoutBatchNorm, {}};
  adam.options.epochs = 3;
  adam.options.batch_size = 16;
  adam.options.seed = 7;
  adam.options.optimizer.schedule = "cosine";
  adam.options.validation_split = 0.2;
  TrainingRun sgd{"64-12-4", {}};
  sgd.options.epochs = 2;
  sgd.options.batch_size = 24;
  sgd.options.seed = 3;
  sgd.options.optimizer.name = "sgd";
  sgd.options.optimizer.learning_rate = 0.05f;
  sgd.options.optimizer.momentum = 0.9f;
  return {adam, sgd};
}

TEST(Checkpoint, ResumingFromAnyStepGivesTheSameModelBytes) {
  set_num_threads(2);
  const Dataset data = quadrant_images(250, 1);
  for (const TrainingRun& run : runs()) {
    SCOPED_TRACE(run.arch);
    Graph reference = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
    const TrainReport expected = train(reference, data, run.options);
    const std::string expected_bytes = serialize_model(reference);

    TempDir dir;
    Recorder recorder(dir.file("checkpoint.lbm"));
    Graph recorded = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
    TrainOptions o = run.options;
    o.checkpoints = &recorder;
    o.checkpoint_every_steps = 1;
    train(recorded, data, o);
    EXPECT_EQ(serialize_model(recorded), expected_bytes) << "checkpointing changed the training";
    ASSERT_EQ(static_cast<int64_t>(recorder.snapshots.size()), expected.steps);  // every step; the last one is the end

    for (size_t k = 0; k < recorder.snapshots.size(); k += (k < 12 ? 1 : 5)) {
      SCOPED_TRACE("resumed from checkpoint " + std::to_string(k));
      const std::string path = dir.file("resume.lbm");
      testing::write_bytes(path, recorder.snapshots[k]);
      ASSERT_TRUE(parse_train_state(recorder.snapshots[k], path).has_value());
      CheckpointFile file(path);
      Graph resumed = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
      TrainOptions r = run.options;
      r.checkpoints = &file;
      r.resume = true;
      const TrainReport report = train(resumed, data, r);
      EXPECT_EQ(report.resumed_at_step, static_cast<int64_t>(k) + 1);
      ASSERT_EQ(serialize_model(resumed), expected_bytes);
      ASSERT_EQ(report.epochs.size(), expected.epochs.size());
      for (size_t e = 0; e < report.epochs.size(); ++e) {
        EXPECT_EQ(report.epochs[e].loss, expected.epochs[e].loss);
        EXPECT_EQ(report.epochs[e].val_accuracy, expected.epochs[e].val_accuracy);
      }
    }
  }
}

TEST(Checkpoint, TheStopFlagSavesAndThrowsInterrupted) {
  set_num_threads(1);
  const Dataset data = quadrant_images(200, 2);
  const TrainingRun run = runs()[0];
  Graph reference = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
  train(reference, data, run.options);

  TempDir dir;
  CheckpointFile file(dir.file("checkpoint.lbm"), dir.file("best.lbm"));
  std::atomic<bool> stop{false};
  TrainOptions o = run.options;
  o.checkpoints = &file;
  o.resume = true;
  o.stop = &stop;
  o.on_progress = [&](const TrainProgress& p) {
    if (p.epoch == 2 && p.batch == 3) stop = true;
  };
  Graph stopped = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
  try {
    train(stopped, data, o);
    FAIL() << "training did not stop";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Interrupted);
    EXPECT_NE(std::string(e.what()).find("checkpoint saved to '" + file.where() + "'"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(std::filesystem::exists(dir.file("best.lbm")));  // epoch 1 had a validation accuracy
  stop = false;
  o.on_progress = nullptr;
  Graph resumed = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
  const TrainReport report = train(resumed, data, o);
  EXPECT_GT(report.resumed_at_step, 0);
  EXPECT_EQ(serialize_model(resumed), serialize_model(reference));
  // A finished run's checkpoint: resuming gives the model at once.
  Graph again = build_model(parse_arch(run.arch), data.sample_shape(), 4, run.options.seed);
  EXPECT_EQ(train(again, data, o).resumed_at_step, report.steps);
  EXPECT_EQ(serialize_model(again), serialize_model(reference));
  // The checkpoint is a model file too.
  EXPECT_EQ(serialize_model(load_model(file.where())), serialize_model(reference));
}

TEST(Checkpoint, QuantizationAwareTrainingResumesToTheSameIntegerModel) {
  set_num_threads(2);
  const Dataset data = quadrant_images(240, 3), test = quadrant_images(100, 4);
  Graph float_model = build_model(parse_arch("64-16-4"), data.sample_shape(), 4, 0);
  TrainOptions pre;
  pre.epochs = 2;
  train(float_model, data, pre);
  QatRunOptions q;
  q.qat.plan.defaults.weight_bits = 2;
  q.qat.lsq = true;
  q.calibration_samples = 100;
  q.train.epochs = 2;
  q.train.batch_size = 20;
  q.train.optimizer.learning_rate = 1e-3f;
  const std::string expected = serialize_model(run_qat(float_model, data, test, q).model);

  TempDir dir;
  Recorder recorder(dir.file("checkpoint.lbm"));
  QatRunOptions recorded = q;
  recorded.train.checkpoints = &recorder;
  recorded.train.checkpoint_every_steps = 5;
  EXPECT_EQ(serialize_model(run_qat(float_model, data, test, recorded).model), expected);
  ASSERT_GE(recorder.snapshots.size(), 4u);
  for (size_t k : {size_t{0}, recorder.snapshots.size() / 2, recorder.snapshots.size() - 2}) {
    testing::write_bytes(dir.file("resume.lbm"), recorder.snapshots[k]);
    CheckpointFile file(dir.file("resume.lbm"));
    QatRunOptions resumed = q;
    resumed.train.checkpoints = &file;
    resumed.train.resume = true;
    const QatRunResult r = run_qat(float_model, data, test, resumed);
    EXPECT_EQ(r.report.resumed_at_step, static_cast<int64_t>(5 * (k + 1)));
    EXPECT_EQ(serialize_model(r.model), expected) << "resumed from checkpoint " << k;
  }
}

TEST(Checkpoint, RefusesACheckpointOfAnotherRunAndDamagedOnes) {
  set_num_threads(1);
  const Dataset data = quadrant_images(120, 5);
  TempDir dir;
  CheckpointFile file(dir.file("checkpoint.lbm"));
  TrainOptions o;
  o.epochs = 2;
  o.checkpoints = &file;
  Graph model = build_model(parse_arch("64-8-4"), data.sample_shape(), 4, 0);
  train(model, data, o);
  const std::string good = testing::read_bytes(file.where());

  auto resume_error = [&](const char* arch, TrainOptions options, const Dataset& d) -> std::string {
    options.resume = true;
    Graph g = build_model(parse_arch(arch), d.sample_shape(), 4, 0);
    try {
      train(g, d, options);
    } catch (const Error& e) {
      return std::string(to_string(e.kind())) + ": " + e.what();
    }
    return "no error";
  };
  TrainOptions more = o;
  more.epochs = 3;
  EXPECT_NE(resume_error("64-8-4", more, data).find("invalid argument: checkpoint '" + file.where() +
                                                    "' belongs to another run (epochs was 2, this run has 3)"),
            std::string::npos);
  TrainOptions other_lr = o;
  other_lr.optimizer.learning_rate = 0.01f;
  EXPECT_NE(resume_error("64-8-4", other_lr, data).find("learning_rate was 0.0010000000474974513, this run has 0.0099999997764825821"),
            std::string::npos);
  EXPECT_NE(resume_error("64-8-4", o, quadrant_images(120, 6)).find("training_data_hash was"), std::string::npos);
  EXPECT_NE(resume_error("64-9-4", o, data).find("holds another model than this run trains"), std::string::npos);

  save_model(model, file.where());  // a model file without training state
  EXPECT_NE(resume_error("64-8-4", o, data).find("is a model file but not a checkpoint"), std::string::npos);
  testing::write_bytes(file.where(), good.substr(0, good.size() - 9));
  EXPECT_NE(resume_error("64-8-4", o, data).find("format error: '" + file.where() + "'"), std::string::npos);
  std::string flipped = good;
  flipped[flipped.size() - 3] ^= 0x40;
  testing::write_bytes(file.where(), flipped);
  EXPECT_NE(resume_error("64-8-4", o, data).find("fails its CRC-32 check"), std::string::npos);
  // A temporary file left by a killed save is removed; the checkpoint itself is untouched.
  testing::write_bytes(file.where(), good);
  testing::write_bytes(dir.file(".checkpoint.lbm.tmp.ABC123"), good.substr(0, 100));
  EXPECT_EQ(resume_error("64-8-4", o, data), "no error");
  EXPECT_FALSE(std::filesystem::exists(dir.file(".checkpoint.lbm.tmp.ABC123")));
}

}  // namespace
}  // namespace lowbit
