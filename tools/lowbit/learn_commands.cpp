// lowbit qat | distill: learning under compression.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lowbit/lowbit.h"

namespace lowbit::cli {
namespace {

using json = nlohmann::ordered_json;

uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

// --teacher-cache: empty means <teacher>.logits, "none" means no cache (the teacher runs every batch).
std::string cache_path(const std::string& teacher, const std::string& option) {
  if (option.empty()) return teacher + ".logits";
  return option == "none" ? "" : option;
}


void print_epoch(const TrainProgress& p, const char* phase) {
  if (!p.epoch_done) return;
  fmt::print("{} epoch {:>3}/{}  loss {:.4f}  accuracy {:.4f}  {:.1f} s\n", phase, p.epoch, p.epochs, p.loss, p.accuracy,
             p.elapsed_seconds);
  std::fflush(stdout);
}

json history_json(const TrainReport& r) {
  json a = json::array();
  for (const auto& e : r.epochs) a.push_back({{"epoch", e.epoch}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"seconds", e.seconds}});
  return a;
}

// Options shared by qat and distill for the quantization-aware phase.
struct QatCli {
  int bits = 4, act_bits = 8;
  bool lsq = false, per_tensor = false, affine = false;
  std::string plan;
  int64_t observer_steps = -1, calib_samples = 1000;
  CLI::Option* lsq_option = nullptr;
  void add(CLI::App* cmd, bool required_bits) {
    auto* b = cmd->add_option("--bits", bits, "Weight bits of the quantized layers")->check(CLI::IsMember({8, 6, 4, 3, 2}));
    if (!required_bits) b->capture_default_str();
    cmd->add_option("--act-bits", act_bits, "Activation bits (the integer runtime computes with 8)")->capture_default_str()
        ->check(CLI::IsMember({8}));
    lsq_option = cmd->add_flag("--lsq,!--no-lsq", lsq,
                               "Learn the step sizes (LSQ) instead of following min-max observers (default at 3 bits and below)");
    cmd->add_flag("--per-tensor", per_tensor, "One weight scale per layer (default: per output channel)");
    cmd->add_flag("--affine", affine, "Affine weights with a zero point (default: symmetric)");
    cmd->add_option("--plan", plan, "Per-layer rules (a plan file of lowbit quantize); overrides --bits");
    cmd->add_option("--observer-steps", observer_steps, "Steps before the activation observers freeze (default: half the training)");
    cmd->add_option("--calib-samples", calib_samples, "Samples for the initial activation ranges")->capture_default_str()
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  }
  QatOptions options() const {
    QatOptions q;
    if (!plan.empty()) {
      q.plan = load_plan(plan);
    } else {
      q.plan.defaults.weight_bits = bits;
      q.plan.defaults.per_channel = !per_tensor;
      q.plan.defaults.weight_scheme = affine ? QScheme::Affine : QScheme::Symmetric;
    }
    q.activation_bits = act_bits;
    q.lsq = lsq;
    if (plan.empty() && lsq_option->count() == 0) q.lsq = defaults_for_bits(bits).lsq;
    q.observer_steps = observer_steps;
    return q;
  }
  // Prints the defaults chosen by bit width (what options() applied that was not given).
  void print_defaults() const {
    if (plan.empty() && lsq_option->count() == 0 && defaults_for_bits(bits).lsq)
      fmt::print("defaults for {}-bit weights: learned step sizes (LSQ; --no-lsq to change)\n", bits);
  }
};

// Prints the quantization-aware phase's results and returns them for the JSON line.
json qat_report(const QatRunResult& r, const QatOptions& qat, int epochs) {
  fmt::print("fake-quantized accuracy {:.4f}, integer accuracy {:.4f}, predictions agree on {:.2f}% of {} test images, "
             "logits differ by {:.5f} on average, {:.5f} at most\n",
             r.fake_quantized_accuracy, r.accuracy, 100.0 * r.agreement, r.test_samples, r.mean_logit_difference,
             r.max_logit_difference);
  return {{"qat_epochs", epochs},
          {"qat_seconds", r.report.seconds},
          {"qat_history", history_json(r.report)},
          {"fake_quant_test_accuracy", r.fake_quantized_accuracy},
          {"test_accuracy", r.accuracy},
          {"agreement", r.agreement},
          {"max_logit_difference", r.max_logit_difference},
          {"mean_logit_difference", r.mean_logit_difference},
          {"lsq", qat.lsq},
          {"plan", json::parse(qat.plan.to_json())}};
}

}  // namespace

Command add_qat(CLI::App& app) {
  auto* cmd = app.add_subcommand("qat", "Quantization-aware training: fine-tune a float model with fake quantization, then convert");
  struct Options {
    std::string model, data = default_dataset_dir(), out, fake_quant_out, teacher, teacher_cache;
    int epochs = 3, batch = 32, threads = 0;
    int64_t train_samples = 0;
    float lr = 1e-4f, temperature = 4.0f, alpha = 0.7f;
    uint64_t seed = 0;
    bool json_out = false;
    QatCli qat;
    CheckpointCli checkpoints;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Trained float model (.lbm or .onnx)")->required();
  cmd->add_option("--data", o->data, "Dataset directory")->capture_default_str();
  cmd->add_option("--out", o->out, "Integer model to write (.lbm)")->required();
  cmd->add_option("--save-fake-quant", o->fake_quant_out, "Also write the fake-quantized float model (.lbm)");
  cmd->add_option("--epochs", o->epochs, "Fine-tuning epochs")->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Mini-batch size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", o->lr, "Learning rate (Adam)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed for shuffling")->capture_default_str();
  cmd->add_option("--train-samples", o->train_samples, "Use only the first N training samples (0: all)");
  cmd->add_option("--teacher", o->teacher, "Distil from this model while training (QAT + distillation)");
  cmd->add_option("--temperature", o->temperature, "With --teacher: softmax temperature T")->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "With --teacher: weight of the soft (teacher) term")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--teacher-cache", o->teacher_cache, "With --teacher: logit cache file (default <teacher>.logits; none: no cache)");
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  o->qat.add(cmd, false);
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  o->checkpoints.add(cmd);
  return [o] {
    stop_training_on_signals();  // first: a signal while the data loads stops training at its first step
    if (o->threads > 0) set_num_threads(o->threads);
    Graph model = open_model(o->model);
    if (is_quantized(model) || is_qat_model(model))
      throw Error(ErrorKind::InvalidArgument, "'" + o->model + "' is not a float model (QAT starts from a trained float model)");
    DatasetSplits data = load_dataset_dir(o->data);
    if (o->train_samples > 0) data.train = data.train.head(o->train_samples);
    QatRunOptions run;
    run.qat = o->qat.options();
    o->qat.print_defaults();
    run.calibration_samples = o->qat.calib_samples;
    TrainOptions& options = run.train;
    options.epochs = o->epochs;
    options.batch_size = o->batch;
    options.optimizer.learning_rate = o->lr;
    options.seed = o->seed;
    options.on_progress = [](const TrainProgress& p) { print_epoch(p, "qat"); };
    o->checkpoints.apply(options);
    Graph teacher;
    if (!o->teacher.empty()) {
      teacher = open_model(o->teacher);
      run.teacher = &teacher;
      run.teacher_cache = cache_path(o->teacher, o->teacher_cache);
      options.distill.temperature = o->temperature;
      options.distill.alpha = o->alpha;
    }
    run.on_ready = [&](const QatRunResult& r) {
      if (!r.teacher_cache_note.empty()) fmt::print("teacher logits: {}\n", r.teacher_cache_note);
      fmt::print("float model {}: test accuracy {:.4f}; quantization-aware training for {} epoch(s), {} thread(s)\n", o->model,
                 r.float_test.accuracy, o->epochs, num_threads());
      if (!o->checkpoints.describe().empty()) fmt::print("{}\n", o->checkpoints.describe());
      std::fflush(stdout);
    };
    const QatRunResult r = run_qat(model, data.train, data.test, run);
    if (r.report.resumed_at_step >= 0)
      fmt::print("resumed from step {} of {} (checkpoint {})\n", r.report.resumed_at_step, r.report.steps, options.checkpoints->where());
    if (const std::string line = CheckpointCli::communication(r.report); !line.empty()) fmt::print("{}\n", line);
    if (writes()) save_model(r.model, o->out);
    if (writes() && !o->fake_quant_out.empty()) save_model(r.fake_quantized, o->fake_quant_out);
    const json report = qat_report(r, run.qat, o->epochs);
    fmt::print("wrote {} ({} bytes, {:.1f}% of the float model's {} bytes)\n", o->out, file_bytes(o->out),
               100.0 * file_bytes(o->out) / std::max<uint64_t>(1, file_bytes(o->model)), file_bytes(o->model));
    if (o->json_out) {
      json j = {{"command", "qat"}, {"model", o->model}, {"out", o->out}, {"threads", num_threads()},
                {"float_test_accuracy", r.float_test.accuracy}, {"float_file_bytes", file_bytes(o->model)},
                {"file_bytes", file_bytes(o->out)}, {"teacher", o->teacher}};
      j.update(report);
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

Command add_distill(CLI::App& app) {
  auto* cmd = app.add_subcommand("distill", "Knowledge distillation: train a student on a teacher's soft predictions (optionally quantized)");
  struct Options {
    std::string teacher, student = "784-64-32-10", data = default_dataset_dir(), out, teacher_cache, fake_quant_out;
    int epochs = 10, qat_epochs = 5, batch = 32, threads = 0;
    int64_t train_samples = 0;
    float lr = 1e-3f, qat_lr = 1e-4f, temperature = 4.0f, alpha = 0.7f;
    std::string schedule = "constant";
    uint64_t seed = 0;
    bool json_out = false;
    QatCli qat;
    CheckpointCli checkpoints;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--teacher", o->teacher, "Trained teacher model (.lbm or .onnx), any architecture")->required();
  cmd->add_option("--student", o->student, "Student: layer sizes like 784-64-32-10, a JSON description, or a model (.lbm) to fine-tune")
      ->capture_default_str();
  cmd->add_option("--data", o->data, "Dataset directory")->capture_default_str();
  cmd->add_option("--out", o->out, "Student model to write (.lbm; integer if --bits is given)")->required();
  cmd->add_option("--temperature", o->temperature, "Softmax temperature T")->capture_default_str();
  cmd->add_option("--alpha", o->alpha, "Weight of the soft (teacher) term; 1 - alpha weighs the labels")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--epochs", o->epochs, "Float distillation epochs")->capture_default_str()->check(CLI::Range(0, 100000));
  cmd->add_option("--qat-epochs", o->qat_epochs, "With --bits: quantization-aware distillation epochs after the float ones")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  cmd->add_option("--batch", o->batch, "Mini-batch size")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--lr", o->lr, "Learning rate of the float epochs (Adam)")->capture_default_str();
  cmd->add_option("--qat-lr", o->qat_lr, "Learning rate of the quantization-aware epochs")->capture_default_str();
  cmd->add_option("--lr-schedule", o->schedule, "constant, or cosine (decay to 0 over each phase)")->capture_default_str()
      ->check(CLI::IsMember({"constant", "cosine"}));
  cmd->add_option("--seed", o->seed, "Seed for the student's initial weights and shuffling")->capture_default_str();
  cmd->add_option("--train-samples", o->train_samples, "Use only the first N training samples (0: all)");
  cmd->add_option("--teacher-cache", o->teacher_cache, "Logit cache file (default <teacher>.logits; none: teacher runs every batch)");
  cmd->add_option("--save-fake-quant", o->fake_quant_out, "With --bits: also write the fake-quantized model");
  cmd->add_flag("--json", o->json_out, "End with one JSON line of results");
  o->qat.add(cmd, true);
  auto* bits = cmd->get_option("--bits");
  cmd->add_option("--threads", o->threads, "Worker threads")->check(CLI::Range(1, 1024));
  o->checkpoints.add(cmd);
  return [o, bits] {
    stop_training_on_signals();  // first: a signal while the teacher and data load stops training at its first step
    if (o->threads > 0) set_num_threads(o->threads);
    const bool quantized = bits->count() > 0 || !o->qat.plan.empty();
    const Graph teacher = open_model(o->teacher);
    const DatasetSplits data = load_dataset_dir(o->data);
    DistillRunOptions run;
    if (std::filesystem::path(o->student).extension() == ".lbm") {
      run.student = open_model(o->student);
      if (is_quantized(*run.student) || is_qat_model(*run.student))
        throw Error(ErrorKind::InvalidArgument, "student '" + o->student + "' is not a float model");
    } else {
      run.student_arch = o->student;
      if (o->epochs == 0) throw Error(ErrorKind::InvalidArgument, "--epochs 0 needs a trained student (.lbm)");
    }
    const std::string cache = cache_path(o->teacher, o->teacher_cache);
    run.teacher_cache = cache;
    run.train_samples = o->train_samples;
    TrainOptions& options = run.train;
    options.batch_size = o->batch;
    options.seed = o->seed;
    options.distill.temperature = o->temperature;
    options.distill.alpha = o->alpha;
    options.optimizer.schedule = o->schedule;
    options.epochs = o->epochs;
    options.optimizer.learning_rate = o->lr;
    options.on_progress = [](const TrainProgress& p) { print_epoch(p, "distill"); };
    o->checkpoints.apply(options);
    if (quantized) {
      QatRunOptions q;
      q.qat = o->qat.options();
      o->qat.print_defaults();
      q.train = options;
      q.calibration_samples = o->qat.calib_samples;
      q.train.epochs = o->qat_epochs;
      q.train.optimizer.learning_rate = o->qat_lr;
      q.train.on_progress = [](const TrainProgress& p) { print_epoch(p, "qat"); };
      o->checkpoints.apply(q.train, "qat");
      run.quantize = q;
    }
    run.metadata["trained_on"] = std::filesystem::path(o->data).filename().string();
    run.metadata["distilled_from"] = std::filesystem::path(o->teacher).filename().string();
    run.on_ready = [&](const DistillRunResult& r) {
      if (!cache.empty()) fmt::print("teacher logits: {}\n", r.teacher_cache_hit ? "read from the cache " + cache : r.teacher_cache_note);
      fmt::print("teacher {}: test accuracy {:.4f}; student {} ({} parameters), T = {}, alpha = {}, {} thread(s)\n", o->teacher,
                 r.teacher_test.accuracy, o->student, r.parameters, o->temperature, o->alpha, num_threads());
      if (!o->checkpoints.describe().empty()) fmt::print("{}\n", o->checkpoints.describe());
      std::fflush(stdout);
    };
    run.on_float_done = [&](const DistillRunResult& r) {
      if (!quantized) return;
      fmt::print("float student test accuracy {:.4f}; quantization-aware distillation for {} epoch(s)\n", r.float_test.accuracy,
                 o->qat_epochs);
      std::fflush(stdout);
    };
    const DistillRunResult r = run_distill(teacher, data, run);
    if (r.report.resumed_at_step >= 0)
      fmt::print("float phase resumed from step {} of {}\n", r.report.resumed_at_step, r.report.steps);
    if (r.qat && r.qat->report.resumed_at_step >= 0)
      fmt::print("quantization-aware phase resumed from step {} of {}\n", r.qat->report.resumed_at_step, r.qat->report.steps);
    for (const auto& [report, phase] : {std::pair{&r.report, "float phase"}, std::pair{r.qat ? &r.qat->report : nullptr, "quantization-aware phase"}})
      if (report)
        if (const std::string line = CheckpointCli::communication(*report, phase); !line.empty()) fmt::print("{}\n", line);
    json j = {{"command", "distill"}, {"teacher", o->teacher}, {"student", o->student}, {"out", o->out},
              {"seed", o->seed}, {"threads", num_threads()}, {"temperature", o->temperature}, {"alpha", o->alpha},
              {"teacher_test_accuracy", r.teacher_test.accuracy}, {"teacher_cache", cache.empty() ? "none" : cache},
              {"teacher_cache_hit", r.teacher_cache_hit}, {"parameters", r.parameters}};
    if (o->epochs > 0) {
      j["epochs"] = o->epochs;
      j["train_seconds"] = r.report.seconds;
      j["history"] = history_json(r.report);
    }
    j["float_test_accuracy"] = r.float_test.accuracy;
    if (writes()) save_model(r.student, o->out);
    if (!r.qat) {
      j["test_accuracy"] = r.float_test.accuracy;
      fmt::print("student test accuracy {:.4f}; wrote {} ({} bytes)\n", r.float_test.accuracy, o->out, file_bytes(o->out));
    } else {
      if (writes() && !o->fake_quant_out.empty()) save_model(r.qat->fake_quantized, o->fake_quant_out);
      j.update(qat_report(*r.qat, run.quantize->qat, run.quantize->train.epochs));
      fmt::print("wrote {} ({} bytes)\n", o->out, file_bytes(o->out));
    }
    j["file_bytes"] = file_bytes(o->out);
    if (o->json_out) std::puts(j.dump().c_str());
    return 0;
  };
}

}  // namespace lowbit::cli
