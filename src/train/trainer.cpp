#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <set>

#include "core/digest.h"
#include "lowbit/ops.h"
#include "lowbit/runtime_config.h"
#include "lowbit/train.h"

namespace lowbit {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

int64_t argmax(const float* row, int64_t n) { return std::max_element(row, row + n) - row; }

// The model graph with its trailing Softmax replaced by the fused SoftmaxCrossEntropy loss.
// Initializers are shared with `model`, so training the copy trains the model.
// With distillation the loss is DistillationLoss, fed the teacher's logits as a graph input.
Graph training_graph(const Graph& model, std::string& logits, const DistillSettings& distill) {
  Graph g = model;
  logits = logits_value(model);
  if (logits != model.outputs.at(0)) {
    int softmax = g.producer(model.outputs.at(0));
    g.nodes.erase(g.nodes.begin() + softmax);
  }
  g.inputs.push_back({"__labels", DType::S32, {-1}});
  if (distill.enabled()) {
    const int64_t classes = model.infer_shapes().at(logits).shape.at(1);
    g.inputs.push_back({"__teacher_logits", DType::F32, {-1, classes}});
    g.add_node({"__loss", "DistillationLoss", {logits, "__teacher_logits", "__labels"}, {"__loss"},
                {{"temperature", distill.temperature}, {"alpha", distill.alpha}}});
  } else {
    g.add_node({"__loss", "SoftmaxCrossEntropy", {logits, "__labels"}, {"__loss"}});
  }
  g.outputs = {"__loss"};
  g.validate();
  return g;
}

void check_compatible(const Graph& model, const Dataset& data) {
  if (!data.inputs.empty())
    throw Error(ErrorKind::InvalidArgument, "the data holds named inputs without labels (e.g. an .npz): it can calibrate a "
                                            "model, not train or evaluate one");
  if (model.inputs.size() != 1)
    throw Error(ErrorKind::InvalidArgument, "the model has " + std::to_string(model.inputs.size()) +
                                                " inputs; training and evaluation need exactly one (the image)");
  if (model.outputs.empty()) throw Error(ErrorKind::InvalidArgument, "the model has no output");
  if (model.inputs[0].dtype != DType::U8 && model.inputs[0].dtype != DType::F32)
    throw Error(ErrorKind::InvalidArgument, "the model's input '" + model.inputs[0].name + "' is " +
                                                name_of(model.inputs[0].dtype) + "; images feed a u8 or f32 input");
  if (data.images.dtype() == DType::F32 && model.inputs[0].dtype != DType::F32)
    throw Error(ErrorKind::InvalidArgument, "the model's input '" + model.inputs[0].name + "' is " +
                                                name_of(model.inputs[0].dtype) +
                                                " (image bytes); the data holds f32 values, which feed an f32 input");
  if (data.images.dtype() != DType::F32 && data.images.dtype() != DType::U8)
    throw Error(ErrorKind::InvalidArgument, std::string("the data's samples are ") + name_of(data.images.dtype()) +
                                                "; expected u8 image bytes or f32 values");
  Shape expected(model.inputs[0].shape.begin() + 1, model.inputs[0].shape.end());
  Shape one_channel = data.sample_shape();
  one_channel.insert(one_channel.begin(), 1);
  if (expected != data.sample_shape() && expected != one_channel)
    throw Error(ErrorKind::InvalidArgument, "the model's input '" + model.inputs[0].name + "' expects samples of shape " +
                                                to_string(expected) + ", the data has " + to_string(data.sample_shape()));
  auto shapes = model.infer_shapes();
  const Shape& out = shapes.at(model.outputs[0]).shape;
  if (out.size() != 2 || out[1] < data.num_classes)
    throw Error(ErrorKind::InvalidArgument, "the model's output " + to_string(out) + " has fewer classes than the data (" +
                                                std::to_string(data.num_classes) + ")");
}

// The teacher's logits for one batch: rows of the cached tensor, or a forward pass of the teacher.
void gather_teacher_logits(const DistillSettings& distill, Executor* teacher, const std::string& teacher_logits,
                           const Dataset& data, std::span<const uint32_t> indices, Tensor& out) {
  if (distill.teacher_logits) {
    const Tensor& all = *distill.teacher_logits;
    const int64_t classes = all.dim(1);
    out.resize({static_cast<int64_t>(indices.size()), classes});
    for (size_t i = 0; i < indices.size(); ++i)
      std::copy_n(all.data<float>() + static_cast<int64_t>(indices[i]) * classes, classes,
                  out.data<float>() + static_cast<int64_t>(i) * classes);
    return;
  }
  gather_batch(data, indices, *distill.teacher, teacher->input(distill.teacher->inputs[0].name));
  teacher->forward();
  const Tensor& logits = teacher->value(teacher_logits);
  out.resize(logits.shape());
  std::copy_n(logits.data<float>(), logits.numel(), out.data<float>());
}

// The settings that shape a run's model bytes, one "key=value" per line (TrainState::settings):
// options, the training data (size and a digest of its bytes), the teacher, the thread count.
std::string exact(double value) {  // round-trips
  char text[40];
  std::snprintf(text, sizeof(text), "%.17g", value);
  return text;
}
std::string train_settings(const TrainOptions& o, const Dataset& data, int64_t held_out) {
  const OptimizerOptions& opt = o.optimizer;
  Digest data_digest;
  data_digest.add(data.images.raw(), data.images.nbytes());
  data_digest.add(data.labels.data(), data.labels.size() * sizeof(int32_t));
  std::string s;
  auto add = [&](const char* key, const std::string& value) { s += std::string(key) + "=" + value + "\n"; };
  add("epochs", std::to_string(o.epochs));
  add("batch", std::to_string(o.batch_size));
  add("optimizer", opt.name);
  add("learning_rate", exact(opt.learning_rate));
  add("momentum", exact(opt.momentum));
  add("beta1", exact(opt.beta1));
  add("beta2", exact(opt.beta2));
  add("epsilon", exact(opt.epsilon));
  add("schedule", opt.schedule);
  add("seed", std::to_string(o.seed));
  add("validation_samples", std::to_string(held_out));
  add("training_samples", std::to_string(data.size()));
  add("training_data_hash", data_digest.hex());
  if (o.distill.enabled()) {
    add("distill_temperature", exact(o.distill.temperature));
    add("distill_alpha", exact(o.distill.alpha));
    if (o.distill.teacher_logits) {
      Digest logits;
      logits.add(o.distill.teacher_logits->raw(), o.distill.teacher_logits->nbytes());
      add("teacher_logits_hash", logits.hex());
    } else {
      add("teacher", "model");
    }
  }
  if (o.shards != 1) add("shards", std::to_string(o.shards));
  add("threads", std::to_string(num_threads()));
  return s;
}

std::map<std::string, std::string> settings_map(const std::string& settings) {
  std::map<std::string, std::string> m;
  size_t begin = 0;
  while (begin < settings.size()) {
    size_t end = settings.find('\n', begin);
    if (end == std::string::npos) end = settings.size();
    const std::string line = settings.substr(begin, end - begin);
    const size_t eq = line.find('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
    begin = end + 1;
  }
  return m;
}

// A saved state fits this run: the same settings, and positions inside the run.
void check_resumable(const TrainState& saved, const TrainState& fresh, const TrainOptions& options, int64_t batches,
                     const std::string& where) {
  if (saved.settings != fresh.settings) {
    const auto then = settings_map(saved.settings), now = settings_map(fresh.settings);
    std::string difference = "different settings";
    for (const auto& [key, value] : now) {
      auto it = then.find(key);
      const std::string old = it == then.end() ? "(none)" : it->second;
      if (old != value) {
        difference = key + " was " + old + ", this run has " + value;
        break;
      }
    }
    if (difference == "different settings")
      for (const auto& [key, value] : then)
        if (!now.count(key)) {
          difference = key + " was " + value + ", this run has none";
          break;
        }
    throw Error(ErrorKind::InvalidArgument, "checkpoint '" + where + "' belongs to another run (" + difference +
                                                "): resume with the settings it was written with, or start afresh");
  }
  auto bad = [&](const std::string& what) {
    throw Error(ErrorKind::Format, "checkpoint '" + where + "': " + what);
  };
  if (saved.epoch < 1 || saved.epoch > options.epochs + 1) bad("epoch " + std::to_string(saved.epoch) + " is outside the run");
  if (saved.batch < 0 || saved.batch >= batches || (saved.epoch > options.epochs && saved.batch != 0))
    bad("batch " + std::to_string(saved.batch) + " is outside epoch " + std::to_string(saved.epoch));
  if (saved.history.size() != static_cast<size_t>(saved.epoch - 1))
    bad(std::to_string(saved.history.size()) + " epoch reports for " + std::to_string(saved.epoch - 1) + " epochs done");
  if (saved.order.size() != fresh.order.size())
    bad("the sample order has " + std::to_string(saved.order.size()) + " entries for " + std::to_string(fresh.order.size()) + " samples");
  std::vector<bool> seen(saved.order.size(), false);
  for (uint32_t i : saved.order) {
    if (i >= seen.size() || seen[i]) bad("the sample order is not a permutation of the samples");
    seen[i] = true;
  }
  if (saved.seen < 0 || saved.correct < 0 || saved.correct > saved.seen)
    bad("the epoch's running totals are inconsistent");
}

// Data-parallel steps (TrainOptions::shards): this rank's shards of the batch in turn, then every
// shard's contribution from all ranks, combined in one order over the shards. A shard contributes
// its gradients (weighted by its share of the batch), the buffers its forward left (f32
// initializers that are not parameters: BatchNorm statistics, observers), its loss times its
// samples, its correct predictions, its samples, and whether its rank was asked to stop.
// Gradients travel in buckets (TrainOptions::bucket_bytes) in the order the backward pass
// completes them: a bucket starts on its way as soon as this rank's last shard has it, while the
// backward pass goes on; the rest (buffers, totals) follows at the end. When the ranks share a
// machine (Communicator::share), nothing is sent: every shard's record lives in memory all ranks
// read, and after a barrier each rank sums and applies only its piece of every parameter (as
// ZeRO's stage 1: the optimizer's work is split, not repeated), writes the piece to shared memory
// and, after a second barrier, copies the others' pieces. Every value is combined over the shards
// by the same pairwise tree, whatever the buckets and the ranks.
class Sharding {
 public:
  struct Result {
    double loss_sum = 0;
    int64_t correct = 0;
    bool stop = false;
  };
  // (indices, hook step, dropout step, gradients-ready callback and loss scale for the backward
  // pass) -> (mean loss, correct predictions) of one forward and backward.
  using ShardFn = std::function<std::pair<float, int64_t>(std::span<const uint32_t>, int64_t, int64_t,
                                                          const Executor::GradientsReady&, float)>;

  Sharding(const TrainOptions& o, Graph& model, std::vector<Parameter>& parameters, const std::vector<size_t>& order)
      : shards_(o.shards), comm_(o.communicator), parameters_(parameters) {
    const int size = comm_ ? comm_->size() : 1;
    if (shards_ < 1 || shards_ % size != 0)
      throw Error(ErrorKind::InvalidArgument, "data-parallel training needs shards (" + std::to_string(shards_) +
                                                  ") to be a positive multiple of the ranks (" + std::to_string(size) + ")");
    if (o.bucket_bytes < 1) throw Error(ErrorKind::InvalidArgument, "gradient buckets need at least one byte");
    per_rank_ = shards_ / size;
    first_ = (comm_ ? comm_->rank() : 0) * per_rank_;
    distributed_ = comm_ && size > 1;
    std::set<std::string> trained;
    size_t values = 0;
    for (const auto& p : parameters_) trained.insert(p.name), values += static_cast<size_t>(p.value.numel());
    for (auto& [name, t] : model.initializers)
      if (t.dtype() == DType::F32 && !trained.count(name)) buffers_.push_back(t), buffer_values_ += static_cast<size_t>(t.numel());
    extra_ = buffer_values_ + 4;
    if (distributed_ && o.shared_memory) shared_ = comm_->share(static_cast<size_t>(shards_) * (values + extra_) + values);
    // Buckets: runs of parameters in the order their gradients complete, each at least bucket_bytes
    // (one bucket when the records are shared: nothing is sent).
    const size_t cap = shared_ ? values : static_cast<size_t>(std::max<int64_t>(1, o.bucket_bytes / static_cast<int64_t>(sizeof(float))));
    bucket_of_.assign(parameters_.size(), 0);
    offset_.assign(parameters_.size(), 0);
    for (size_t p : order) {
      if (buckets_.empty() || buckets_.back().values >= cap) buckets_.emplace_back();
      Bucket& b = buckets_.back();
      bucket_of_[p] = buckets_.size() - 1;
      offset_[p] = b.values;
      b.params.push_back(p);
      b.values += static_cast<size_t>(parameters_[p].value.numel());
    }
    if (shared_) {  // every shard's gradients, every shard's extras, the updated weights
      summed_.resize(values);
      float* base = shared_->values().data();
      for (Bucket& b : buckets_) b.all = base;  // (one bucket)
      extras_ = base + static_cast<size_t>(shards_) * values;
      weights_ = extras_ + static_cast<size_t>(shards_) * extra_;
    } else {
      for (Bucket& b : buckets_) b.storage.resize(static_cast<size_t>(shards_) * b.values), b.all = b.storage.data();
      extra_storage_.resize(static_cast<size_t>(shards_) * extra_);
      extras_ = extra_storage_.data();
    }
    snapshot_.resize(buffer_values_);
    merged_.resize(buffer_values_);
    point_gradients_at(first_ + per_rank_ - 1);
  }

  int buckets() const { return static_cast<int>(buckets_.size()); }
  bool shared_memory() const { return shared_ != nullptr; }
  double communication_seconds() const { return blocked_; }

  Result step(std::span<const uint32_t> batch, int64_t step, bool stop, const ShardFn& run_shard) {
    const int64_t count = static_cast<int64_t>(batch.size());
    copy_buffers(snapshot_.data(), /*out=*/true);
    for (Bucket& b : buckets_) b.written = 0;
    next_ = 0;
    for (int k = 0; k < per_rank_; ++k) {
      const int s = first_ + k;
      const int64_t b0 = count * s / shards_, b1 = count * (s + 1) / shards_;
      float* extra = extras_ + static_cast<size_t>(s) * extra_;
      if (b1 > b0) {
        if (k > 0) copy_buffers(snapshot_.data(), /*out=*/false);  // every shard starts from the step's model
        point_gradients_at(s);
        const float share = static_cast<float>(b1 - b0) / static_cast<float>(count);
        auto ready = [&](std::span<const size_t> done) {
          for (size_t p : done) {
            Bucket& b = buckets_[bucket_of_[p]];
            float* slot = b.all + static_cast<size_t>(s) * b.values + offset_[p];
            if (parameters_[p].grad->raw() != slot) {  // an op handed over a tensor of its own (FakeQuantize's dx = dy)
              std::copy_n(parameters_[p].grad->data<float>(), parameters_[p].value.numel(), slot);
              *parameters_[p].grad = Tensor::wrap(DType::F32, parameters_[p].value.shape(), slot, nullptr);
            }
            ++b.written;
          }
          start_ready();
          if (next_ > 0 && sending()) {
            const auto start = Clock::now();
            comm_->progress();
            blocked_ += seconds_since(start);
          }
        };
        const auto [loss, correct] = run_shard(batch.subspan(static_cast<size_t>(b0), static_cast<size_t>(b1 - b0)), step,
                                               step * shards_ + s, ready, share);
        copy_buffers(extra, /*out=*/true);
        extra[buffer_values_] = loss * static_cast<float>(b1 - b0);
        extra[buffer_values_ + 1] = static_cast<float>(correct);
        extra[buffer_values_ + 2] = static_cast<float>(b1 - b0);
      } else {  // an empty shard (a batch smaller than the shards): zeros
        for (Bucket& b : buckets_) {
          std::fill_n(b.all + static_cast<size_t>(s) * b.values, b.values, 0.0f);
          b.written += b.params.size();
        }
        std::copy(snapshot_.begin(), snapshot_.end(), extra);
        std::fill_n(extra + buffer_values_, 3, 0.0f);
        start_ready();
      }
      extra[buffer_values_ + 3] = stop ? 1.0f : 0.0f;
    }
    if (next_ != buckets_.size()) throw Error(ErrorKind::Internal, "data-parallel step: a gradient bucket was never completed");
    if (distributed_) {
      const auto start = Clock::now();
      if (shared_) shared_->sync();  // every rank's records written
      else comm_->all_gather(mine(extras_, extra_), {extras_, static_cast<size_t>(shards_) * extra_});
      blocked_ += seconds_since(start);
    }
    // Buffers: the value every shard that ran agrees on, else their mean (pairwise sum / count).
    ran_.clear();
    for (int s = 0; s < shards_; ++s)
      if (extras_[static_cast<size_t>(s) * extra_ + buffer_values_ + 2] != 0.0f) ran_.push_back(s);
    for (size_t i = 0; i < buffer_values_; ++i) {
      column_.clear();
      for (int s : ran_) column_.push_back(extras_[static_cast<size_t>(s) * extra_ + i]);
      const bool agree = std::all_of(column_.begin(), column_.end(), [&](float v) { return v == column_.front(); });
      float sum = 0;
      if (!column_.empty() && !agree) tree_sum(column_.data(), static_cast<int>(column_.size()), 1, 1, &sum);
      merged_[i] = column_.empty() ? snapshot_[i] : agree ? column_.front() : sum / static_cast<float>(column_.size());
    }
    copy_buffers(merged_.data(), /*out=*/false);
    // Gradients: each bucket's shards summed by the pairwise tree, into the slot the gradients
    // point at (the last shard of this rank's); when the records are shared, only this rank's
    // piece of every parameter, into a sum of its own (the others are reading the records).
    for (Bucket& b : buckets_) {
      if (sending()) {
        const auto start = Clock::now();
        comm_->wait(b.handle);
        blocked_ += seconds_since(start);
      }
      if (!shared_) tree_sum(b.all, shards_, b.values, b.values, b.all + static_cast<size_t>(pointed_) * b.values);
    }
    if (shared_) {
      const size_t values = buckets_.front().values;
      for (size_t p = 0; p < parameters_.size(); ++p) {
        const auto [first, last] = my_piece(p);
        const size_t at = offset_[p] + static_cast<size_t>(first);
        tree_sum(buckets_.front().all + at, shards_, values, static_cast<size_t>(last - first), summed_.data() + at);
        *parameters_[p].grad = Tensor::wrap(DType::F32, parameters_[p].value.shape(), summed_.data() + offset_[p], nullptr);
      }
      pointed_ = -1;
    }
    // Totals: the same tree over the shards' loss, correct predictions, samples and stop flags.
    float totals[4];
    tree_sum(extras_ + buffer_values_, shards_, extra_, 4, totals);
    return {static_cast<double>(totals[0]), static_cast<int64_t>(totals[1]), totals[3] > 0.0f};
  }

  // The optimizer's step with the combined gradients: the whole step, or, when the records are
  // shared, this rank's piece of it, then every rank's pieces exchanged through shared memory.
  void update(Optimizer& optimizer) {
    if (!shared_) return optimizer.step(parameters_);
    optimizer.step(parameters_, comm_->rank(), comm_->size());
    const auto start = Clock::now();  // (communication: the copies to and from the others, the barrier)
    for (size_t p = 0; p < parameters_.size(); ++p) {
      const auto [first, last] = my_piece(p);
      std::copy(parameters_[p].value.data<float>() + first, parameters_[p].value.data<float>() + last, weights_ + offset_[p] + first);
    }
    shared_->sync();
    for (size_t p = 0; p < parameters_.size(); ++p) {
      const auto [first, last] = my_piece(p);
      float* w = parameters_[p].value.data<float>();
      const float* shared = weights_ + offset_[p];
      std::copy(shared, shared + first, w);
      std::copy(shared + last, shared + parameters_[p].value.numel(), w + last);
    }
    blocked_ += seconds_since(start);
  }
  // When the update is split: gives every rank the whole optimizer state, for a checkpoint.
  // Each rank holds its pieces of the per-parameter vectors (named "<kind>/<parameter>", as
  // Optimizer::state writes them); scalars (Adam's step count) are the same everywhere. Collective.
  void gather_state(Optimizer& optimizer) {
    if (!shared_) return;
    std::map<std::string, int64_t> sizes;
    for (const auto& p : parameters_) sizes[p.name] = p.value.numel();
    std::map<std::string, Tensor> state = optimizer.state(parameters_);
    const int rank = comm_->rank(), size = comm_->size();
    for (auto& entry : state) {
      Tensor& t = entry.second;
      const size_t slash = entry.first.find('/');
      const auto of = slash == std::string::npos ? sizes.end() : sizes.find(entry.first.substr(slash + 1));
      if (of == sizes.end() || t.dtype() != DType::F32 || t.numel() != of->second) continue;  // (a scalar)
      const int64_t n = t.numel(), most = (n + size - 1) / size;
      std::vector<float> mine(static_cast<size_t>(most)), all(static_cast<size_t>(most) * static_cast<size_t>(size));
      float* values = t.data<float>();
      const auto [first, last] = Optimizer::piece(n, rank, size);
      std::copy(values + first, values + last, mine.begin());
      comm_->all_gather(mine, all);
      for (int r = 0; r < size; ++r) {
        const auto [begin, end] = Optimizer::piece(n, r, size);
        std::copy_n(all.begin() + static_cast<ptrdiff_t>(r * most), end - begin, values + begin);
      }
    }
    optimizer.set_state(state, parameters_);
  }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into parameters_, in the order backward completes them
    size_t values = 0;
    float* all = nullptr;          // every shard's weighted gradients, shard after shard
    std::vector<float> storage;    // (all, unless the records are shared)
    size_t written = 0;            // (parameter, shard) pairs of this rank written this step
    int handle = -1;
  };
  // Starts, in order, every bucket this rank's shards have completed.
  void start_ready() {
    while (next_ < buckets_.size() && buckets_[next_].written == static_cast<size_t>(per_rank_) * buckets_[next_].params.size()) {
      Bucket& b = buckets_[next_++];
      if (sending()) b.handle = comm_->start_all_gather(mine(b.all, b.values), {b.all, static_cast<size_t>(shards_) * b.values});
    }
  }
  // Whether records travel by MPI (rather than being shared, or there being one rank).
  bool sending() const { return distributed_ && !shared_; }
  // This rank's piece of parameter p, when the update is split.
  std::pair<int64_t, int64_t> my_piece(size_t p) const {
    return Optimizer::piece(parameters_[p].value.numel(), comm_->rank(), comm_->size());
  }
  // Points every parameter's gradient at its place in shard s's record: backward writes it there.
  void point_gradients_at(int s) {
    if (s == pointed_) return;
    for (size_t p = 0; p < parameters_.size(); ++p) {
      Bucket& b = buckets_[bucket_of_[p]];
      *parameters_[p].grad = Tensor::wrap(DType::F32, parameters_[p].value.shape(),
                                          b.all + static_cast<size_t>(s) * b.values + offset_[p], nullptr);
    }
    pointed_ = s;
  }
  // This rank's shards' part of a record of every shard (`per_shard` values each).
  std::span<const float> mine(const float* all, size_t per_shard) const {
    return {all + static_cast<size_t>(first_) * per_shard, static_cast<size_t>(per_rank_) * per_shard};
  }
  // The one order every sum over shards takes: `count` (>= 1) records of `width` values, `stride`
  // apart from `first`, added pairwise (((0 + 1) + (2 + 3)) + ...), the last level written to `out`
  // (which may be one of the records). The records themselves are only read (other ranks may be
  // reading shared ones too): beyond two, each run of columns is copied to scratch for the tree.
  void tree_sum(const float* first, int count, size_t stride, size_t width, float* out) {
    if (count == 1) {
      if (out != first) std::copy_n(first, width, out);
      return;
    }
    if (count == 2) {
      for (size_t i = 0; i < width; ++i) out[i] = first[i] + first[stride + i];
      return;
    }
    int top = 1;  // the last level's distance: the largest power of two below count
    while (top * 2 < count) top *= 2;
    constexpr size_t kColumns = 256;
    scratch_.resize(static_cast<size_t>(count) * kColumns);
    for (size_t c0 = 0; c0 < width; c0 += kColumns) {
      const size_t n = std::min(kColumns, width - c0);
      for (int s = 0; s < count; ++s)
        std::copy_n(first + static_cast<size_t>(s) * stride + c0, n, scratch_.data() + static_cast<size_t>(s) * kColumns);
      for (int distance = 1; distance < top; distance *= 2)
        for (int s = 0; s + distance < count; s += 2 * distance) {
          float* x = scratch_.data() + static_cast<size_t>(s) * kColumns;
          const float* y = x + static_cast<size_t>(distance) * kColumns;
          for (size_t i = 0; i < n; ++i) x[i] += y[i];
        }
      const float* y = scratch_.data() + static_cast<size_t>(top) * kColumns;
      for (size_t i = 0; i < n; ++i) out[c0 + i] = scratch_[i] + y[i];
    }
  }
  void copy_buffers(float* flat, bool out) {
    for (auto& t : buffers_) {
      float* d = t.data<float>();
      if (out) std::copy(d, d + t.numel(), flat);
      else std::copy(flat, flat + t.numel(), d);
      flat += t.numel();
    }
  }

  int shards_, per_rank_ = 1, first_ = 0;
  bool distributed_ = false;
  Communicator* comm_;
  std::vector<Parameter>& parameters_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, offset_;  // per parameter: its bucket, its offset in the bucket's shard record
  size_t next_ = 0;                         // the next bucket to start
  int pointed_ = -1;                        // the shard whose record the gradients point at
  std::vector<Tensor> buffers_;             // share storage with the model's initializers
  size_t buffer_values_ = 0, extra_ = 0;    // per shard: buffers, loss sum, correct, samples, stop
  std::vector<float> extra_storage_, snapshot_, merged_, column_, scratch_;
  float* extras_ = nullptr;                 // every shard's buffers and totals (extra_ values each)
  std::unique_ptr<SharedFloats> shared_;    // when the ranks share memory: records and weights
  float* weights_ = nullptr;                // (shared) every rank's updated piece of every parameter
  std::vector<float> summed_;               // (shared) this rank's pieces of the summed gradients
  std::vector<int> ran_;  // the shards of this step that had samples
  double blocked_ = 0;
};

}  // namespace

std::string logits_value(const Graph& model) {
  if (model.outputs.empty()) throw Error(ErrorKind::InvalidArgument, "the model has no output");
  int p = model.producer(model.outputs[0]);
  if (p < 0 || !traits_of(model.nodes[p]).probabilities_of_logits) return model.outputs[0];
  // A softmax over the class axis (the last): its input are the logits.
  const int64_t axis = model.nodes[p].attr_int("axis", -1);
  if (axis != -1 && axis + 1 != static_cast<int64_t>(model.infer_shapes().at(model.outputs[0]).shape.size()))
    return model.outputs[0];
  return model.nodes[p].inputs.at(0);
}

float input_scale(const Graph& model) {
  auto it = model.metadata.find("input_scale");
  if (it == model.metadata.end()) return 1.0f / 255.0f;
  try {
    return std::stof(it->second);
  } catch (const std::exception&) {
    throw Error(ErrorKind::Format, "model metadata 'input_scale' is not a number: '" + it->second + "'");
  }
}

void feed_batch(const Dataset& data, std::span<const uint32_t> indices, const Graph& model, Executor& run) {
  if (data.inputs.empty()) {
    if (model.inputs.empty()) throw Error(ErrorKind::InvalidArgument, "the model has no input");
    gather_batch(data, indices, model, run.input(model.inputs[0].name));
    return;
  }
  for (const auto& in : model.inputs) {
    auto it = std::find_if(data.inputs.begin(), data.inputs.end(), [&](const auto& p) { return p.first == in.name; });
    if (it == data.inputs.end()) {
      std::string have;
      for (const auto& [name, t] : data.inputs) have += (have.empty() ? "" : ", ") + name;
      throw Error(ErrorKind::InvalidArgument, "the data has no input '" + in.name + "' (it has " + have + ")");
    }
    const Tensor& all = it->second;
    const Shape sample(all.shape().begin() + 1, all.shape().end());
    bool fits = all.dtype() == in.dtype && sample.size() + 1 == in.shape.size();
    for (size_t d = 0; fits && d < sample.size(); ++d) fits = in.shape[d + 1] < 0 || in.shape[d + 1] == sample[d];
    if (!fits)
      throw Error(ErrorKind::InvalidArgument, "the data's input '" + in.name + "' is " + name_of(all.dtype()) + to_string(all.shape()) +
                                                  "; the model's is " + name_of(in.dtype) + to_string(in.shape));
    Shape shape = all.shape();
    shape[0] = static_cast<int64_t>(indices.size());
    Tensor& batch = run.input(in.name);
    if (!batch.defined() || batch.dtype() != all.dtype())
      batch = Tensor(all.dtype(), shape);
    else
      batch.resize(shape);
    const size_t per_sample = all.nbytes() / static_cast<size_t>(all.dim(0));
    for (size_t i = 0; i < indices.size(); ++i)
      std::memcpy(static_cast<std::byte*>(batch.raw()) + i * per_sample,
                  static_cast<const std::byte*>(all.raw()) + static_cast<size_t>(indices[i]) * per_sample, per_sample);
  }
}

void gather_batch(const Dataset& data, std::span<const uint32_t> indices, const Graph& model, Tensor& images, Tensor* labels) {
  if (!data.inputs.empty())
    throw Error(ErrorKind::InvalidArgument, "the data holds named inputs (e.g. an .npz), not images: feed them by name");
  const float scale = input_scale(model);
  Shape shape = data.sample_shape();
  const int64_t per_sample = element_count(shape);
  if (!model.inputs.empty() && model.inputs[0].shape.size() == shape.size() + 2) shape.insert(shape.begin(), 1);  // one channel
  shape.insert(shape.begin(), static_cast<int64_t>(indices.size()));
  if (data.images.dtype() == DType::F32 && images.dtype() != DType::F32)  // (checked before the tensor is touched)
    throw Error(ErrorKind::InvalidArgument, std::string("the model's input is ") + name_of(images.dtype()) +
                                                " (image bytes); the data holds f32 values, which feed an f32 input");
  images.resize(shape);
  if (data.images.dtype() == DType::F32) {  // values as they are
    const float* src = data.images.data<float>();
    for (size_t i = 0; i < indices.size(); ++i)
      std::memcpy(images.data<float>() + static_cast<int64_t>(i) * per_sample,
                  src + static_cast<int64_t>(indices[i]) * per_sample, static_cast<size_t>(per_sample) * sizeof(float));
  } else if (images.dtype() == DType::U8) {
    const uint8_t* src = data.images.data<uint8_t>();
    for (size_t i = 0; i < indices.size(); ++i)
      std::memcpy(images.data<uint8_t>() + static_cast<int64_t>(i) * per_sample,
                  src + static_cast<int64_t>(indices[i]) * per_sample, static_cast<size_t>(per_sample));
  } else {
    const uint8_t* src = data.images.data<uint8_t>();
    float* dst = images.data<float>();
    for (size_t i = 0; i < indices.size(); ++i) {
      const uint8_t* __restrict s = src + static_cast<int64_t>(indices[i]) * per_sample;
      float* __restrict d = dst + static_cast<int64_t>(i) * per_sample;
      for (int64_t j = 0; j < per_sample; ++j) d[j] = static_cast<float>(s[j]) * scale;  // vectorizes
    }
  }
  if (labels) {
    labels->resize({static_cast<int64_t>(indices.size())});
    int32_t* l = labels->data<int32_t>();
    for (size_t i = 0; i < indices.size(); ++i) l[i] = data.labels[indices[i]];
  }
}

TrainReport train(Graph& model, const Dataset& all_data, const TrainOptions& options) {
  if (options.epochs < 1) throw Error(ErrorKind::InvalidArgument, "epochs must be at least 1");
  if (options.batch_size < 1) throw Error(ErrorKind::InvalidArgument, "batch size must be at least 1");
  if (!(options.validation_split >= 0.0 && options.validation_split < 1.0))
    throw Error(ErrorKind::InvalidArgument, "validation split must be in [0, 1)");
  check_compatible(model, all_data);
  const int64_t held_out = static_cast<int64_t>(std::floor(all_data.size() * options.validation_split));
  const Dataset* data = &all_data;
  Dataset train_part, validation;
  if (held_out > 0) {
    train_part = all_data.slice(0, all_data.size() - held_out);
    validation = all_data.slice(all_data.size() - held_out, all_data.size());
    data = &train_part;
  }
  if (data->size() == 0) throw Error(ErrorKind::InvalidArgument, "no training samples");

  std::string logits_name;
  Graph graph = training_graph(model, logits_name, options.distill);
  Executor run(graph, /*training=*/true);
  run.set_seed(options.seed);  // dropout masks: a function of (seed, step, node name)
  // Distillation: the teacher's logits per batch, gathered from the cache or computed by the teacher.
  const DistillSettings& distill = options.distill;
  std::unique_ptr<Executor> teacher_run;
  std::string teacher_logits_name;
  if (distill.enabled()) {
    const int64_t classes = graph.infer_shapes().at(logits_name).shape.at(1);
    if (distill.teacher_logits) {
      const Tensor& t = *distill.teacher_logits;
      if (t.dtype() != DType::F32 || t.rank() != 2 || t.dim(0) != all_data.size() || t.dim(1) != classes)
        throw Error(ErrorKind::InvalidArgument, "teacher logits are " + to_string(t.shape()) + ", expected [" +
                                                    std::to_string(all_data.size()) + ", " + std::to_string(classes) +
                                                    "] (one row per training sample)");
    } else {
      check_compatible(*distill.teacher, all_data);
      teacher_logits_name = logits_value(*distill.teacher);
      const int64_t teacher_classes = distill.teacher->infer_shapes().at(teacher_logits_name).shape.at(1);
      if (teacher_classes != classes)
        throw Error(ErrorKind::InvalidArgument, "the teacher predicts " + std::to_string(teacher_classes) +
                                                    " classes, the student " + std::to_string(classes));
      teacher_run = std::make_unique<Executor>(*distill.teacher);
    }
  }
  auto optimizer = Optimizer::create(options.optimizer);
  if (options.hooks) options.hooks->on_start(run.parameters());
  const bool cosine = options.optimizer.schedule == "cosine";
  const std::string input_name = model.inputs[0].name;
  const int64_t batches = (data->size() + options.batch_size - 1) / options.batch_size;
  const int64_t total_steps = batches * options.epochs;

  // Everything that carries from step to step besides the model: a checkpoint saves it.
  TrainState state;
  state.rng = Rng(options.seed ^ 0x5eed5eed5eed5eedULL).state();
  state.order.resize(static_cast<size_t>(data->size()));
  std::iota(state.order.begin(), state.order.end(), 0u);
  Checkpointer* store = options.checkpoints;
  if (store) {
    if (options.checkpoint_every_steps < 0 || options.checkpoint_every_epochs < 1)
      throw Error(ErrorKind::InvalidArgument, "checkpoints go every N >= 1 steps or epochs");
    state.settings = train_settings(options, *data, held_out);
  }
  TrainReport report;
  if (store && options.resume) {
    if (std::optional<TrainState> saved = store->load(model)) {
      check_resumable(*saved, state, options, batches, store->where());
      optimizer->set_state(saved->optimizer, run.parameters());
      for (auto& p : run.parameters()) {
        auto it = saved->learning_rate_scales.find(p.name);
        if (it != saved->learning_rate_scales.end()) p.learning_rate_scale = it->second;
      }
      state = std::move(*saved);
      report.resumed_at_step = static_cast<int64_t>(state.epoch - 1) * batches + state.batch;
    }
  }
  // Data parallelism: this rank's shards of every batch; every rank applies the same combined step.
  std::unique_ptr<Sharding> sharding;
  if (options.shards != 1 || options.communicator)
    sharding = std::make_unique<Sharding>(options, model, run.parameters(), run.gradient_order());
  const bool writer = !options.communicator || options.communicator->rank() == 0;
  bool gathered_stop = false;  // a sharded run stops when any rank was asked to, all at the same step
  const double seconds_before = state.seconds;
  const auto start = Clock::now();
  auto elapsed = [&] { return seconds_before + seconds_since(start); };
  auto save = [&] {
    if (sharding) sharding->gather_state(*optimizer);  // (every rank)
    if (!writer) return;  // rank 0 writes for all
    state.seconds = elapsed();
    state.optimizer = optimizer->state(run.parameters());
    state.learning_rate_scales.clear();
    for (const auto& p : run.parameters()) state.learning_rate_scales[p.name] = p.learning_rate_scale;
    store->save(model, state);
  };
  auto stop_requested = [&] { return options.stop && options.stop->load(std::memory_order_relaxed); };
  auto should_stop = [&] { return sharding ? gathered_stop : stop_requested(); };
  auto stopped = [&](int64_t steps_done) {
    std::string message = "training stopped after step " + std::to_string(steps_done) + " of " + std::to_string(total_steps) +
                          " (epoch " + std::to_string(std::min(state.epoch, options.epochs)) + " of " + std::to_string(options.epochs) + ")";
    if (store) {
      save();
      message += "; checkpoint saved to '" + store->where() + "'";
    }
    return Error(ErrorKind::Interrupted, message);
  };

  Tensor& images = run.input(input_name);
  Tensor& labels = run.input("__labels");
  // One forward and backward over `indices` (a batch, or a shard of one): (mean loss, correct).
  auto forward_backward = [&](std::span<const uint32_t> indices, int64_t hook_step, int64_t mask_step,
                              const Executor::GradientsReady& gradients_ready, float loss_scale) {
    gather_batch(*data, indices, model, images, &labels);
    if (distill.enabled())
      gather_teacher_logits(distill, teacher_run.get(), teacher_logits_name, *data, indices, run.input("__teacher_logits"));
    if (options.hooks) options.hooks->before_forward(hook_step);
    run.set_step(mask_step);  // dropout masks are a function of (seed, step, node)
    run.forward();
    if (options.hooks) options.hooks->after_forward(run, hook_step);
    run.backward("__loss", gradients_ready, loss_scale);
    const Tensor& logits = run.value(logits_name);
    const int64_t classes = logits.dim(1), n = static_cast<int64_t>(indices.size());
    const int32_t* l = labels.data<int32_t>();
    int64_t correct = 0;
    for (int64_t i = 0; i < n; ++i) correct += argmax(logits.data<float>() + i * classes, classes) == l[i];
    return std::pair<float, int64_t>(run.value("__loss").data<float>()[0], correct);
  };
  while (state.epoch <= options.epochs) {
    const int epoch = state.epoch;
    const auto epoch_start = Clock::now();
    if (state.batch == 0) {
      Rng rng(state.rng);
      rng.shuffle(state.order);
      state.rng = rng.state();
      state.loss_sum = 0, state.correct = 0, state.seen = 0;
    }
    while (state.batch < batches) {
      const int64_t b = state.batch;
      const int64_t begin = b * options.batch_size;
      const int64_t count = std::min<int64_t>(options.batch_size, data->size() - begin);
      const auto batch_indices = std::span<const uint32_t>(state.order).subspan(begin, count);
      const int64_t step = static_cast<int64_t>(epoch - 1) * batches + b;
      if (cosine)
        optimizer->set_learning_rate(static_cast<float>(
            options.optimizer.learning_rate * 0.5 *
            (1.0 + std::cos(3.14159265358979323846 * static_cast<double>(step) / static_cast<double>(total_steps)))));
      double batch_loss = 0;  // the loss summed over the batch's samples
      int64_t batch_correct = 0;
      float loss = 0;
      if (sharding) {
        const Sharding::Result r = sharding->step(batch_indices, step, stop_requested(), forward_backward);
        batch_loss = r.loss_sum, batch_correct = r.correct, gathered_stop = r.stop;
        loss = static_cast<float>(batch_loss / static_cast<double>(count));
      } else {
        const auto [mean, correct] = forward_backward(batch_indices, step, step, nullptr, 1.0f);
        loss = mean, batch_loss = static_cast<double>(loss) * count, batch_correct = correct;
      }
      if (sharding) sharding->update(*optimizer);
      else optimizer->step(run.parameters());
      if (options.hooks) options.hooks->after_update(step);
      if (!std::isfinite(loss))
        throw Error(ErrorKind::InvalidArgument, "training diverged: the loss became " + std::to_string(loss) + " in epoch " +
                                                    std::to_string(epoch) + " (try a smaller learning rate)");
      state.loss_sum += batch_loss;
      state.correct += batch_correct;
      state.seen += count;
      state.batch = b + 1;
      if (options.on_progress && state.batch < batches) {
        TrainProgress p;
        p.epoch = epoch, p.epochs = options.epochs, p.batch = state.batch, p.batches = batches;
        p.loss = state.loss_sum / state.seen, p.accuracy = static_cast<double>(state.correct) / state.seen;
        p.elapsed_seconds = elapsed();
        options.on_progress(p);
      }
      if (state.batch == batches) break;  // the epoch's end below checkpoints and stops
      if (should_stop()) throw stopped(step + 1);
      if (store && options.checkpoint_every_steps > 0 && (step + 1) % options.checkpoint_every_steps == 0) save();
    }
    EpochReport e;
    e.epoch = epoch;
    e.loss = state.loss_sum / state.seen;
    e.accuracy = static_cast<double>(state.correct) / state.seen;
    if (held_out > 0) {
      EvalReport v = evaluate(model, validation);
      e.val_loss = v.loss, e.val_accuracy = v.accuracy;
    }
    e.seconds = seconds_since(epoch_start);
    const bool best = held_out > 0 && std::all_of(state.history.begin(), state.history.end(),
                                                  [&](const EpochReport& h) { return h.val_accuracy < e.val_accuracy; });
    state.history.push_back(e);
    state.epoch = epoch + 1;
    state.batch = 0;
    if (options.on_progress) {
      TrainProgress p;
      p.epoch = epoch, p.epochs = options.epochs, p.batch = batches, p.batches = batches;
      p.loss = e.loss, p.accuracy = e.accuracy, p.elapsed_seconds = elapsed();
      p.epoch_done = true, p.val_loss = e.val_loss, p.val_accuracy = e.val_accuracy;
      options.on_progress(p);
    }
    const int64_t steps_done = static_cast<int64_t>(epoch) * batches;
    if (store) {
      if (best && writer) store->save_best(model, state);
      const bool due = options.checkpoint_every_steps > 0 ? steps_done % options.checkpoint_every_steps == 0
                                                          : epoch % options.checkpoint_every_epochs == 0;
      if (state.epoch > options.epochs || (due && !should_stop())) save();  // (stopped() saves)
    }
    if (state.epoch <= options.epochs && should_stop()) throw stopped(steps_done);
  }
  report.epochs = state.history;
  report.seconds = elapsed();
  report.steps = total_steps;
  if (sharding) report.communication_seconds = sharding->communication_seconds(), report.buckets = sharding->buckets(),
                  report.shared_memory = sharding->shared_memory();
  return report;
}

void run_batches(Executor& run, const Graph& model, const Dataset& data, int64_t samples, int batch_size,
                 const std::string& logits, const std::function<void(int64_t, int64_t, const Tensor&)>& visit) {
  if (batch_size < 1) throw Error(ErrorKind::InvalidArgument, "batch size must be at least 1");
  Tensor& images = run.input(model.inputs.at(0).name);
  std::vector<uint32_t> indices;
  for (int64_t begin = 0; begin < samples; begin += batch_size) {
    const int64_t count = std::min<int64_t>(batch_size, samples - begin);
    indices.resize(static_cast<size_t>(count));
    std::iota(indices.begin(), indices.end(), static_cast<uint32_t>(begin));
    gather_batch(data, indices, model, images);
    run.forward();
    visit(begin, count, run.value(logits));
  }
}

namespace {
// An inference pass over `data` (checked against the model) on an executor of its own: shared by
// predict_classes, compute_logits and evaluate.
void for_each_batch(const Graph& model, const Dataset& data, int batch_size,
                    const std::function<void(int64_t, int64_t, const Tensor&)>& visit) {
  check_compatible(model, data);
  if (batch_size < 1) throw Error(ErrorKind::InvalidArgument, "batch size must be at least 1");
  Executor run(model);
  run_batches(run, model, data, data.size(), batch_size, logits_value(model), visit);
}
}  // namespace

std::vector<int32_t> predict_classes(const Graph& model, const Dataset& data, int batch_size) {
  std::vector<int32_t> classes(static_cast<size_t>(data.size()));
  for_each_batch(model, data, batch_size, [&](int64_t begin, int64_t count, const Tensor& logits) {
    for (int64_t i = 0; i < count; ++i)
      classes[begin + i] = static_cast<int32_t>(argmax(logits.data<float>() + i * logits.dim(1), logits.dim(1)));
  });
  return classes;
}

Tensor compute_logits(const Graph& model, const Dataset& data, int batch_size) {
  Tensor result;
  for_each_batch(model, data, batch_size, [&](int64_t begin, int64_t, const Tensor& logits) {
    if (!result.defined()) result = Tensor(DType::F32, {data.size(), logits.dim(1)});
    std::copy_n(logits.data<float>(), logits.numel(), result.data<float>() + begin * logits.dim(1));
  });
  if (!result.defined()) result = Tensor(DType::F32, {0, 0});
  return result;
}

EvalReport evaluate(const Graph& model, const Dataset& data, int batch_size) {
  EvalReport report;
  double loss_sum = 0;
  int64_t correct = 0;
  for_each_batch(model, data, batch_size, [&](int64_t begin, int64_t count, const Tensor& logits) {
    const int64_t classes = logits.dim(1);
    for (int64_t i = 0; i < count; ++i) {
      const float* row = logits.data<float>() + i * classes;
      const int label = data.labels[begin + i];
      correct += argmax(row, classes) == label;
      // Cross-entropy from logits with log-sum-exp, as in training.
      const float peak = *std::max_element(row, row + classes);
      double sum = 0;
      for (int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(row[c] - peak));
      loss_sum += std::log(sum) + peak - row[label];
    }
  });
  report.count = data.size();
  report.accuracy = data.size() ? static_cast<double>(correct) / data.size() : 0.0;
  report.loss = data.size() ? loss_sum / data.size() : 0.0;
  return report;
}

}  // namespace lowbit
