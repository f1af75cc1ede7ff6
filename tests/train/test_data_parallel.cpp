// Data-parallel training (TrainOptions::shards, Communicator): with the same shards, 1, 2 and 4
// ranks (threads of a LocalGroup here; MPI processes share the arithmetic) give the same model
// bytes and the same history: plain training with BatchNorm and dropout, QAT with learned step
// sizes and moving-average observers, distillation; a stop asked of one rank stops all of them at
// the same step.
#include <atomic>
#include <thread>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::quadrant_images;

const char* kBatchNormDropout = R"({"layers": [{"type": "flatten"}, {"type": "dense", "units": 16}, {"type": "batchnorm"},
  {"type": "relu"}, {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 4}, {"type": "softmax"}]})";

struct Outcome {
  std::string bytes;
  std::vector<double> losses;
};

// Runs `train_one(rank's communicator or null)` on `ranks` threads; returns each rank's outcome.
std::vector<Outcome> on_ranks(int ranks, const std::function<Outcome(Communicator*)>& train_one) {
  if (ranks == 0) return {train_one(nullptr)};
  LocalGroup group(ranks);
  std::vector<Outcome> out(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) threads.emplace_back([&, r] { out[static_cast<size_t>(r)] = train_one(&group.member(r)); });
  for (auto& t : threads) t.join();
  return out;
}

Outcome outcome(const Graph& model, const TrainReport& report) {
  Outcome o{serialize_model(model), {}};
  for (const auto& e : report.epochs) o.losses.push_back(e.loss), o.losses.push_back(e.val_accuracy);
  return o;
}

void expect_same_on_one_two_and_four_ranks(const std::function<Outcome(Communicator*)>& train_one) {
  const Outcome one = on_ranks(0, train_one).at(0);
  for (int ranks : {1, 2, 4}) {
    const auto outcomes = on_ranks(ranks, train_one);
    for (int r = 0; r < ranks; ++r) {
      EXPECT_EQ(outcomes[static_cast<size_t>(r)].bytes, one.bytes) << ranks << " ranks, rank " << r;
      EXPECT_EQ(outcomes[static_cast<size_t>(r)].losses, one.losses) << ranks << " ranks, rank " << r;
    }
  }
}

TEST(DataParallel, OneTwoAndFourRanksGiveTheSameModelBytes) {
  set_num_threads(1);
  const Dataset data = quadrant_images(301, 1);  // batches of 32 cut into 4 shards of 8; the last batch has 13 samples
  auto train_one = [&](Communicator* comm) {
    Graph model = build_model(parse_arch(kBatchNormDropout), data.sample_shape(), 4, 5);
    TrainOptions o;
    o.epochs = 2;
    o.seed = 5;
    o.optimizer.schedule = "cosine";
    o.validation_split = 0.1;
    o.shards = 4;
    o.communicator = comm;
    const TrainReport report = train(model, data, o);
    return outcome(model, report);
  };
  expect_same_on_one_two_and_four_ranks(train_one);
  // Shards change the arithmetic (BatchNorm sees each shard's statistics), so they are part of the run.
  Graph plain = build_model(parse_arch(kBatchNormDropout), data.sample_shape(), 4, 5);
  TrainOptions o;
  o.epochs = 2, o.seed = 5, o.optimizer.schedule = "cosine", o.validation_split = 0.1;
  train(plain, data, o);
  EXPECT_NE(serialize_model(plain), train_one(nullptr).bytes);
}

// Gradients sent in buckets of any size, or shared in memory with the update split into pieces
// (the ranks of one machine): the same bytes.
TEST(DataParallel, GradientBucketsAndSharedMemoryDoNotChangeTheBytes) {
  set_num_threads(1);
  const Dataset data = quadrant_images(301, 1);
  for (int shards : {4, 3}) {  // (a share of 1/3 is not a power of two: its scaling rounds)
    std::vector<std::string> bytes;
    for (int64_t bucket : {int64_t{0}, int64_t{4}, int64_t{256}, int64_t{1} << 20})  // (0: shared memory)
      for (int ranks : {0, shards == 4 ? 2 : 3}) {
        auto outcomes = on_ranks(ranks, [&](Communicator* comm) {
          Graph model = build_model(parse_arch(kBatchNormDropout), data.sample_shape(), 4, 5);
          TrainOptions o;
          o.epochs = 1, o.seed = 5, o.shards = shards, o.communicator = comm;
          o.shared_memory = bucket == 0;
          o.bucket_bytes = bucket == 0 ? TrainOptions{}.bucket_bytes : bucket;
          const TrainReport report = train(model, data, o);
          EXPECT_EQ(report.shared_memory, bucket == 0 && ranks > 1);
          // In backward's order: the last dense layer's weights and bias (272 bytes), BatchNorm's scale and shift and
          // the first dense layer's weights, its bias; at 4 bytes, one bucket for each of the 6 parameters.
          EXPECT_EQ(report.buckets, bucket == 4 ? 6 : bucket == 256 ? 3 : 1) << bucket;
          return outcome(model, report);
        });
        for (const auto& o : outcomes) bytes.push_back(o.bytes);
      }
    for (const auto& b : bytes) EXPECT_EQ(b, bytes.front()) << shards << " shards";
  }
}

// With the update split into pieces, each rank holds only its pieces of the optimizer's moments:
// a checkpoint gathers them, so that training resumed from it, on any number of ranks, ends
// with the bytes of a run never stopped (Adam and SGD with momentum).
TEST(DataParallel, CheckpointsOfSharedMemoryRanksHoldTheWholeOptimizerState) {
  set_num_threads(1);
  const Dataset data = quadrant_images(200, 6);
  for (const char* optimizer : {"adam", "sgd"}) {
    SCOPED_TRACE(optimizer);
    auto options = [&](Communicator* comm) {
      TrainOptions o;
      o.epochs = 2, o.seed = 9, o.shards = 2, o.communicator = comm;
      o.optimizer.name = optimizer, o.optimizer.momentum = 0.9f;
      if (o.optimizer.name == "sgd") o.optimizer.learning_rate = 0.05f;
      return o;
    };
    const std::string expected = on_ranks(0, [&](Communicator* comm) {
      Graph model = build_model(parse_arch("64-12-4"), data.sample_shape(), 4, 2);
      return outcome(model, train(model, data, options(comm)));
    }).at(0).bytes;
    for (int resumed_on : {0, 2}) {
      testing::TempDir dir;
      std::atomic<bool> stop{false};
      on_ranks(2, [&](Communicator* comm) {  // stopped after step 10 (of 14), with a checkpoint
        Graph model = build_model(parse_arch("64-12-4"), data.sample_shape(), 4, 2);
        CheckpointFile file(dir.file(comm->rank() == 0 ? "checkpoint.lbm" : "unused.lbm"));
        TrainOptions o = options(comm);
        o.checkpoints = &file, o.stop = &stop;
        if (comm->rank() == 0) o.on_progress = [&](const TrainProgress& p) { if (p.epoch == 2 && p.batch == 2) stop = true; };
        EXPECT_THROW(train(model, data, o), Error);
        return Outcome{};
      });
      const auto outcomes = on_ranks(resumed_on, [&](Communicator* comm) {
        Graph model = build_model(parse_arch("64-12-4"), data.sample_shape(), 4, 2);
        CheckpointFile file(dir.file("checkpoint.lbm"));
        TrainOptions o = options(comm);
        o.checkpoints = &file, o.resume = true;
        const TrainReport report = train(model, data, o);
        EXPECT_EQ(report.resumed_at_step, 10);
        return outcome(model, report);
      });
      for (const auto& o : outcomes) EXPECT_EQ(o.bytes, expected) << "resumed on " << resumed_on << " ranks";
    }
  }
}

TEST(DataParallel, QuantizationAwareTrainingAndDistillationToo) {
  set_num_threads(1);
  const Dataset data = quadrant_images(200, 2), test = quadrant_images(60, 3);
  Graph float_model = build_model(parse_arch("64-16-4"), data.sample_shape(), 4, 0);
  TrainOptions pre;
  pre.epochs = 2;
  train(float_model, data, pre);
  expect_same_on_one_two_and_four_ranks([&](Communicator* comm) {  // LSQ scales learned, activations observed
    QatRunOptions q;
    q.qat.plan.defaults.weight_bits = 3;
    q.qat.lsq = true;
    q.calibration_samples = 64;
    q.train.epochs = 2;
    q.train.batch_size = 20;
    q.train.shards = 4;
    q.train.communicator = comm;
    const QatRunResult r = run_qat(float_model, data, test, q);
    return outcome(r.model, r.report);
  });
  expect_same_on_one_two_and_four_ranks([&](Communicator* comm) {  // min-max weights, moving-average activations
    QatRunOptions q;
    q.qat.plan.defaults.weight_bits = 4;
    q.calibration_samples = 64;
    q.train.epochs = 2;
    q.train.shards = 4;
    q.train.communicator = comm;
    const QatRunResult r = run_qat(float_model, data, test, q);
    return outcome(r.model, r.report);
  });
  expect_same_on_one_two_and_four_ranks([&](Communicator* comm) {  // the teacher runs on each rank's shards
    Graph student = build_model(parse_arch("64-8-4"), data.sample_shape(), 4, 1);
    TrainOptions o;
    o.epochs = 2;
    o.distill.teacher = &float_model;
    o.shards = 4;
    o.communicator = comm;
    const TrainReport report = train(student, data, o);
    return outcome(student, report);
  });
}

TEST(DataParallel, AStopAskedOfOneRankStopsEveryRankAtTheSameStep) {
  set_num_threads(1);
  const Dataset data = quadrant_images(200, 4);
  LocalGroup group(2);
  std::atomic<bool> stop_rank1{false}, never{false};
  std::string messages[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      Graph model = build_model(parse_arch("64-8-4"), data.sample_shape(), 4, 0);
      TrainOptions o;
      o.epochs = 3;
      o.shards = 2;
      o.communicator = &group.member(r);
      o.stop = r == 1 ? &stop_rank1 : &never;
      if (r == 1) o.on_progress = [&](const TrainProgress& p) { if (p.epoch == 2 && p.batch == 2) stop_rank1 = true; };
      try {
        train(model, data, o);
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::Interrupted) messages[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_NE(messages[0].find("training stopped after step 10 of 21"), std::string::npos) << messages[0];
  EXPECT_EQ(messages[0], messages[1]);
}

TEST(DataParallel, ShardsMustBeAMultipleOfTheRanks) {
  const Dataset data = quadrant_images(40, 5);
  LocalGroup group(2);
  Graph model = build_model(parse_arch("64-8-4"), data.sample_shape(), 4, 0);
  TrainOptions o;
  o.shards = 3;
  o.communicator = &group.member(0);
  EXPECT_LOWBIT_ERROR(train(model, data, o), "shards (3) to be a positive multiple of the ranks (2)");
}

}  // namespace
}  // namespace lowbit
