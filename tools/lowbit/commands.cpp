#include "commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <map>
#include <numeric>
#include <nlohmann/json.hpp>

#include "lowbit/lowbit.h"

namespace lowbit::cli {
namespace {

using json = nlohmann::ordered_json;

void add_threads_option(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "Worker threads (default: all cores, or LOWBIT_NUM_THREADS)")
      ->check(CLI::Range(1, 1024));
}
void apply_threads(int threads) {
  if (threads > 0) set_num_threads(threads);
}

// One line of progress: redrawn in place on a terminal, otherwise one line per epoch.
class Progress {
 public:
  explicit Progress(bool quiet) : tty_(!quiet && ::isatty(STDOUT_FILENO)), quiet_(quiet) {}
  void operator()(const TrainProgress& p) {
    if (p.epoch_done) {
      if (tty_) std::fputs("\r\033[K", stdout);
      std::string line = fmt::format("epoch {:>3}/{}  loss {:.4f}  accuracy {:.4f}", p.epoch, p.epochs, p.loss, p.accuracy);
      if (p.val_accuracy >= 0) line += fmt::format("  val_loss {:.4f}  val_accuracy {:.4f}", p.val_loss, p.val_accuracy);
      line += fmt::format("  {:.1f} s", p.elapsed_seconds);
      if (!quiet_) std::puts(line.c_str());
      std::fflush(stdout);
      return;
    }
    if (!tty_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    const double done = ((p.epoch - 1) + static_cast<double>(p.batch) / p.batches) / p.epochs;
    const double eta = done > 0 ? p.elapsed_seconds * (1 - done) / done : 0;
    const int width = 30, filled = static_cast<int>(width * p.batch / p.batches);
    fmt::print("\repoch {:>3}/{} [{}{}] {}/{}  loss {:.4f}  accuracy {:.4f}  ETA {:.0f} s\033[K", p.epoch, p.epochs,
               std::string(filled, '#'), std::string(width - filled, '.'), p.batch, p.batches, p.loss, p.accuracy, eta);
    std::fflush(stdout);
  }

 private:
  bool tty_, quiet_;
  std::chrono::steady_clock::time_point last_{};
};

uint64_t file_size(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

}  // namespace

Command add_train(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a model from its description and save it");
  struct Options {
    std::string data = default_dataset_dir(), arch = "784-64-32-10", out;
    int epochs = 10, batch = 32, threads = 0;
    float lr = 1e-3f, momentum = 0.0f;
    std::string optimizer = "adam", schedule = "constant";
    uint64_t seed = 0;
    double validation_split = 0.0;
    int64_t train_samples = 0;
    bool json = false;
    CheckpointCli checkpoints;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--data", o->data, "Dataset directory with the four IDX files")->capture_default_str();
  cmd->add_option("--arch", o->arch, "Layer sizes like 784-64-32-10, or a JSON model description")->capture_default_str();
  cmd->add_option("--epochs", o->epochs, "Passes over the training data")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Mini-batch size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", o->lr, "Learning rate")->capture_default_str();
  cmd->add_option("--optimizer", o->optimizer, "adam or sgd")->capture_default_str()->check(CLI::IsMember({"adam", "sgd"}));
  cmd->add_option("--momentum", o->momentum, "Momentum for sgd")->capture_default_str();
  cmd->add_option("--lr-schedule", o->schedule, "constant, or cosine (decay to 0 over the run)")->capture_default_str()
      ->check(CLI::IsMember({"constant", "cosine"}));
  cmd->add_option("--seed", o->seed, "Seed for initial weights and shuffling")->capture_default_str();
  cmd->add_option("--validation-split", o->validation_split, "Fraction of the training data held out for validation")
      ->capture_default_str()->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--train-samples", o->train_samples, "Use only the first N training samples (0: all)");
  cmd->add_option("--out", o->out, "Where to write the trained model (.lbm)")->required();
  cmd->add_flag("--json", o->json, "End with one JSON line of results");
  add_threads_option(cmd, o->threads);
  o->checkpoints.add(cmd);
  return [o] {
    stop_training_on_signals();  // first: a signal while the data loads stops training at its first step
    apply_threads(o->threads);
    const DatasetSplits data = load_dataset_dir(o->data);
    TrainRunOptions run;
    o->checkpoints.apply(run.train);
    run.arch = o->arch;
    run.train_samples = o->train_samples;
    TrainOptions& options = run.train;
    options.epochs = o->epochs;
    options.batch_size = o->batch;
    options.optimizer.name = o->optimizer;
    options.optimizer.learning_rate = o->lr;
    options.optimizer.momentum = o->momentum;
    options.optimizer.schedule = o->schedule;
    options.seed = o->seed;
    options.validation_split = o->validation_split;
    Progress progress(false);
    options.on_progress = [&](const TrainProgress& p) { progress(p); };
    run.on_start = [&](const Graph& model, int64_t samples) {
      fmt::print("training {} ({} parameters) on {} samples of '{}', {} thread(s)\n", model.name, model.parameter_count(),
                 samples, o->data, num_threads());
      if (!o->checkpoints.describe().empty()) fmt::print("{}\n", o->checkpoints.describe());
      std::fflush(stdout);
    };
    run.metadata["trained_on"] = std::filesystem::path(o->data).filename().string();
    const TrainRunResult result = run_train(data, run);
    const Graph& model = result.model;
    const TrainReport& report = result.report;
    const EvalReport& test = result.test;
    if (writes()) save_model(model, o->out);
    if (report.resumed_at_step >= 0)
      fmt::print("resumed from step {} of {} (checkpoint {})\n", report.resumed_at_step, report.steps,
                 run.train.checkpoints->where());
    if (const std::string line = CheckpointCli::communication(report); !line.empty()) fmt::print("{}\n", line);
    fmt::print("test accuracy {:.4f}  test loss {:.4f}  train time {:.2f} s  saved {} ({} bytes)\n", test.accuracy,
               test.loss, report.seconds, o->out, file_size(o->out));
    if (o->json) {
      json j = {{"command", "train"}, {"model", o->out}, {"arch", o->arch}, {"seed", o->seed},
                {"threads", num_threads()}, {"epochs", o->epochs}, {"batch", o->batch},
                {"parameters", model.parameter_count()}, {"file_bytes", file_size(o->out)},
                {"train_seconds", report.seconds}, {"test_accuracy", test.accuracy}, {"test_loss", test.loss}};
      j["history"] = json::array();
      for (const auto& e : report.epochs) {
        json h = {{"epoch", e.epoch}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"seconds", e.seconds}};
        if (e.val_accuracy >= 0) h["val_loss"] = e.val_loss, h["val_accuracy"] = e.val_accuracy;
        j["history"].push_back(h);
      }
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

Command add_eval(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Measure a model's accuracy on a dataset's test split");
  struct Options {
    std::string model, data = default_dataset_dir();
    int threads = 0, batch = 256;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Model file (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--data", o->data, "Dataset directory with the four IDX files")->capture_default_str();
  cmd->add_option("--batch", o->batch, "Batch size for inference")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--json", o->json, "End with one JSON line of results");
  add_threads_option(cmd, o->threads);
  return [o] {
    apply_threads(o->threads);
    Graph model = open_model(o->model);
    DatasetSplits data = load_dataset_dir(o->data);
    auto start = std::chrono::steady_clock::now();
    EvalReport test = evaluate(model, data.test, o->batch);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    fmt::print("{}: test accuracy {:.4f}  test loss {:.4f}  on {} samples in {:.3f} s\n", o->model, test.accuracy,
               test.loss, test.count, seconds);
    if (o->json) {
      json j = {{"command", "eval"}, {"model", o->model}, {"data", o->data}, {"samples", test.count},
                {"test_accuracy", test.accuracy}, {"test_loss", test.loss}, {"eval_seconds", seconds}};
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

Command add_predict(CLI::App& app) {
  auto* cmd = app.add_subcommand("predict", "Predict the classes of a dataset's test split (and write them as CSV)");
  struct Options {
    std::string model, data = default_dataset_dir(), out;
    int threads = 0, batch = 256;
    int64_t limit = 0;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Model file (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--data", o->data, "Dataset directory with the four IDX files")->capture_default_str();
  cmd->add_option("--out", o->out, "CSV to write: a header, then index,class,label for every sample");
  cmd->add_option("--limit", o->limit, "Only the first N test samples (0: all)")->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd->add_option("--batch", o->batch, "Batch size for inference")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_flag("--json", o->json, "End with one JSON line of results");
  add_threads_option(cmd, o->threads);
  return [o] {
    apply_threads(o->threads);
    const Graph model = open_model(o->model);
    DatasetSplits data = load_dataset_dir(o->data);
    const Dataset test = o->limit > 0 ? data.test.head(o->limit) : data.test;
    auto start = std::chrono::steady_clock::now();
    const PredictResult r = predict(model, test, PredictOptions{.batch_size = o->batch});
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!o->out.empty()) save_predictions(r, test.labels, o->out);
    fmt::print("{}: {} test samples, accuracy {:.4f}, in {:.3f} s\n", o->model, test.size(), r.accuracy.value_or(0.0), seconds);
    const int64_t shown = std::min<int64_t>(10, test.size());
    json first = json::array();
    if (shown > 0) fmt::print("{:>8} {:>6} {:>6}\n", "index", "class", "label");
    for (int64_t i = 0; i < shown; ++i) {
      fmt::print("{:>8} {:>6} {:>6}\n", i, r.classes[i], test.labels[i]);
      first.push_back({{"index", i}, {"class", r.classes[i]}, {"label", test.labels[i]}});
    }
    if (shown < test.size()) fmt::print("{:>8}\n", "...");
    if (!o->out.empty()) fmt::print("wrote {} ({} predictions)\n", o->out, test.size());
    if (o->json) {
      json j = {{"command", "predict"}, {"model", o->model}, {"data", o->data}, {"samples", test.size()},
                {"test_accuracy", r.accuracy.value_or(0.0)}, {"predict_seconds", seconds}, {"out", o->out},
                {"predictions", first}};
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

// numpy's name of a dtype, for error messages that say how to fix the array.
const char* numpy_name(DType d) {
  switch (d) {
    case DType::F32: return "np.float32";
    case DType::F16: return "np.float16";
    case DType::S64: return "np.int64";
    case DType::S32: return "np.int32";
    case DType::U8: return "np.uint8";
    case DType::S8: return "np.int8";
    case DType::Bool: return "bool";
    default: return name_of(d);
  }
}

// `run --profile`: milliseconds per run by op type (largest first) and the 15 slowest nodes; the
// same figures as JSON (every node, in run order).
json print_profile(const std::vector<Executor::NodeTime>& times) {
  std::vector<double> per_run;  // seconds per run, per node
  std::map<std::string, std::pair<double, int>> by_op;  // seconds per run, nodes
  for (const auto& t : times) {
    per_run.push_back(t.runs > 0 ? t.seconds / static_cast<double>(t.runs) : 0.0);
    by_op[t.op].first += per_run.back();
    ++by_op[t.op].second;
  }
  const double total = std::accumulate(per_run.begin(), per_run.end(), 0.0);
  std::vector<std::pair<std::string, std::pair<double, int>>> ops(by_op.begin(), by_op.end());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  const auto share = [&](double s) { return total > 0 ? 100.0 * s / total : 0.0; };
  fmt::print("profile ({:.3f} ms per run in the nodes, {} run{} timed)\n", total * 1e3, times.empty() ? 0 : times[0].runs,
             !times.empty() && times[0].runs == 1 ? "" : "s");
  fmt::print("  {:<24} {:>6} {:>10} {:>7}\n", "op", "nodes", "ms/run", "share");
  for (const auto& [op, v] : ops) fmt::print("  {:<24} {:>6} {:>10.3f} {:>6.1f}%\n", op, v.second, v.first * 1e3, share(v.first));
  std::vector<size_t> order(times.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return per_run[a] > per_run[b]; });
  fmt::print("  slowest nodes:\n");
  for (size_t k = 0; k < std::min<size_t>(15, order.size()); ++k)
    fmt::print("  {:<56} {:<18} {:>9.3f} {:>6.1f}%\n", times[order[k]].name, times[order[k]].op, per_run[order[k]] * 1e3,
               share(per_run[order[k]]));
  json nodes = json::array();
  for (size_t i = 0; i < times.size(); ++i) nodes.push_back({{"name", times[i].name}, {"op", times[i].op}, {"ms_per_run", per_run[i] * 1e3}});
  return {{"ms_per_run", total * 1e3}, {"nodes", nodes}};
}

Command add_run(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Run a model on named tensors from a numpy .npz/.npy file and write every output to one");
  struct Options {
    std::string model, inputs, out;
    int threads = 0, repeat = 1;
    bool json = false, profile = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Model file (.lbm, or .onnx: imported)")->required();
  cmd->add_option("--repeat", o->repeat, "Run this many times and report the fastest and the median time (a benchmark)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--inputs", o->inputs,
                  "Feeds: an .npz with one array per model input, by name (np.savez), or an .npy for a one-input model")
      ->required();
  cmd->add_option("--out", o->out, "Where to write every graph output by name (.npz; .npy for a one-output model)")->required();
  add_threads_option(cmd, o->threads);
  cmd->add_flag("--json", o->json, "End with one JSON line describing the outputs");
  cmd->add_flag("--profile", o->profile,
                "Time every node (the runs after the first when --repeat > 1) and print where the time goes, by op type and by node");
  return [o] {
    apply_threads(o->threads);
    const Graph model = open_model(o->model);
    std::vector<NamedTensor> feeds = read_arrays(o->inputs);
    const bool single_npy = feeds.size() == 1 && o->inputs.size() >= 4 && o->inputs.compare(o->inputs.size() - 4, 4, ".npy") == 0;
    if (single_npy && model.inputs.size() == 1) feeds[0].name = model.inputs[0].name;  // an .npy feeds the one input
    // Every input fed, nothing unknown, each of its declared dtype (shapes: Graph::check_inputs).
    std::string missing, unknown, names;
    for (const auto& in : model.inputs) {
      names += (names.empty() ? "" : ", ") + in.name;
      if (std::none_of(feeds.begin(), feeds.end(), [&](const NamedTensor& f) { return f.name == in.name; })) missing += " '" + in.name + "'";
    }
    for (const auto& f : feeds)
      if (std::none_of(model.inputs.begin(), model.inputs.end(), [&](const ValueInfo& in) { return in.name == f.name; }))
        unknown += " '" + f.name + "'";
    if (!missing.empty() || !unknown.empty())
      throw Error(ErrorKind::InvalidArgument, o->inputs + ": " + (missing.empty() ? "" : "no array for input" + missing) +
                                                  (missing.empty() || unknown.empty() ? "" : "; ") +
                                                  (unknown.empty() ? "" : "no model input named" + unknown) + " (the model's inputs: " + names + ")");
    std::vector<const Tensor*> ordered;
    for (const auto& in : model.inputs) {
      const Tensor& t = std::find_if(feeds.begin(), feeds.end(), [&](const NamedTensor& f) { return f.name == in.name; })->tensor;
      if (t.dtype() != in.dtype)
        throw Error(ErrorKind::InvalidArgument, fmt::format("{}: array '{}' is {}, the model's input is {} (numpy: astype({}))", o->inputs,
                                                            in.name, name_of(t.dtype()), name_of(in.dtype), numpy_name(in.dtype)));
      ordered.push_back(&t);
    }
    model.check_inputs(ordered);
    Executor run(model);
    for (size_t i = 0; i < model.inputs.size(); ++i) run.input(model.inputs[i].name) = *ordered[i];
    std::vector<double> times;
    for (int r = 0; r < o->repeat; ++r) {
      if (o->profile && r == (o->repeat > 1 ? 1 : 0)) run.set_profiling(true);  // the first run warms up
      const auto start = std::chrono::steady_clock::now();
      run.forward();
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const double seconds = times[0];
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double best = sorted.front(), median = sorted[sorted.size() / 2];
    std::vector<NamedTensor> outputs;
    json listed = json::array();
    for (const auto& name : model.outputs) {
      outputs.push_back({name, run.value(name).clone()});
      const Tensor& t = outputs.back().tensor;
      fmt::print("output {} {} {}\n", name, name_of(t.dtype()), to_string(t.shape()));
      listed.push_back({{"name", name}, {"dtype", name_of(t.dtype())}, {"shape", t.shape()}});
    }
    write_arrays(o->out, outputs);
    fmt::print("ran {} on {} ({} thread{}, {:.2f} ms); wrote {}\n", o->model, o->inputs, num_threads(), num_threads() == 1 ? "" : "s",
               seconds * 1e3, o->out);
    if (o->repeat > 1) fmt::print("{} runs: fastest {:.3f} ms, median {:.3f} ms\n", o->repeat, best * 1e3, median * 1e3);
    json profile = o->profile ? print_profile(run.node_times()) : json();
    if (o->json) {
      json j = {{"command", "run"}, {"model", o->model}, {"inputs", o->inputs}, {"out", o->out}, {"threads", num_threads()},
                {"seconds", seconds}, {"runs", o->repeat}, {"best_seconds", best}, {"median_seconds", median}, {"outputs", listed}};
      if (o->profile) j["profile"] = profile;
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

Command add_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show a model's layers, shapes, parameters and sizes");
  struct Options {
    std::string model;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Model file (.lbm, or .onnx: imported)")->required();
  cmd->add_flag("--json", o->json, "Print one JSON object instead of tables");
  return [o] {
    const Graph model = open_model(o->model);
    const bool onnx = o->model.size() >= 5 && o->model.compare(o->model.size() - 5, 5, ".onnx") == 0;
    const uint32_t format_version = onnx ? 0 : model_file_version(o->model);  // 0: an ONNX file
    const ModelInfo info = model_info(model);
    // A training checkpoint (checkpoint.h) is a model file with the training state beside it.
    std::optional<TrainState> state;
    if (!onnx) {
      std::ifstream in(o->model, std::ios::binary);
      const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      state = parse_train_state(bytes, o->model);
    }
    json layers = json::array();
    for (const auto& l : info.layers) {
      json tensors = json::array();
      for (const auto& t : l.tensors)
        tensors.push_back({{"name", t.name}, {"dtype", name_of(t.dtype)}, {"shape", t.shape}, {"bits", t.bits}, {"bytes", t.bytes}});
      layers.push_back({{"name", l.name}, {"op", l.op}, {"output_shape", l.output_shape}, {"parameters", l.parameters},
                        {"bytes", l.bytes}, {"weights", l.weights}, {"bits_per_weight", l.bits_per_weight}, {"tensors", tensors}});
    }
    const int64_t total_bytes = info.tensor_bytes;
    json j = {{"command", "info"}, {"model", o->model}, {"name", model.name}, {"format_version", format_version},
              {"parameters", info.parameters}, {"tensor_bytes", total_bytes}, {"file_bytes", file_size(o->model)},
              {"weights", info.weights}, {"bits_per_weight", info.bits_per_weight},
              {"metadata", model.metadata}, {"layers", layers}};
    const EpochReport* best = nullptr;  // of a checkpoint's epochs with validation, the first of the highest accuracy
    if (state)
      for (const auto& e : state->history)
        if (e.val_accuracy >= 0 && (!best || e.val_accuracy > best->val_accuracy)) best = &e;
    if (state) {
      j["checkpoint"] = {{"epoch", state->epoch}, {"batch", state->batch}, {"epochs_done", state->history.size()},
                         {"train_seconds", state->seconds}, {"best_val_accuracy", best ? best->val_accuracy : -1.0},
                         {"best_epoch", best ? best->epoch : 0}};
    }
    if (o->json) {
      std::puts(j.dump().c_str());
      return 0;
    }
    fmt::print("model {} ({}), format version {}\n", o->model, model.name, format_version);
    if (state) {
      fmt::print("training checkpoint: {} epoch(s) done, next: epoch {} batch {}, {:.1f} s of training", state->history.size(),
                 state->epoch, state->batch, state->seconds);
      if (best) fmt::print(", best validation accuracy {:.4f} (epoch {})", best->val_accuracy, best->epoch);
      fmt::print("\n");
    }
    for (const auto& in : info.inputs) fmt::print("input  {} {}{}\n", in.name, name_of(in.dtype), to_string(in.shape));
    for (const auto& out : info.outputs) fmt::print("output {} {}\n", out.name, to_string(out.shape));
    // Column widths fit the longest name, op and shape (CNN op names and shapes are long).
    size_t name_w = 5, op_w = 2, shape_w = 6;
    for (const auto& l : layers) {
      name_w = std::max(name_w, l["name"].get<std::string>().size());
      op_w = std::max(op_w, l["op"].get<std::string>().size());
      shape_w = std::max(shape_w, to_string(l["output_shape"].get<Shape>()).size());
    }
    fmt::print("\n{:<{}} {:<{}} {:<{}} {:>10} {:>10} {:>6}  {}\n", "layer", name_w, "op", op_w, "output", shape_w, "params", "bytes",
               "bits/w", "tensors");
    for (const auto& l : layers) {
      std::string tensors;
      for (const auto& t : l["tensors"])
        tensors += fmt::format("{}{} {}{}", tensors.empty() ? "" : ", ", t["name"].get<std::string>(),
                               t["dtype"].get<std::string>(), to_string(t["shape"].get<Shape>()));
      const double bits = l["bits_per_weight"].get<double>();
      fmt::print("{:<{}} {:<{}} {:<{}} {:>10} {:>10} {:>6}  {}\n", l["name"].get<std::string>(), name_w, l["op"].get<std::string>(), op_w,
                 to_string(l["output_shape"].get<Shape>()), shape_w, l["parameters"].get<int64_t>(), l["bytes"].get<int64_t>(),
                 bits > 0 ? fmt::format("{:.2f}", bits) : std::string("-"), tensors);
    }
    fmt::print("\ntotal: {} parameters, {} bytes of tensors, {} bytes on disk; {} weights at {:.2f} bits each (codes, scales and zero points)\n",
               info.parameters, total_bytes, file_size(o->model), info.weights, info.bits_per_weight);
    return 0;
  };
}

}  // namespace lowbit::cli
