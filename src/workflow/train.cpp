// run_train() and run_distill(): the steps of `lowbit train` and `lowbit distill`
// (include/lowbit/workflow.h).
#include "lowbit/model_io.h"
#include "lowbit/workflow.h"

namespace lowbit {

TrainRunResult run_train(const DatasetSplits& data, const TrainRunOptions& options) {
  const Dataset train_data = options.train_samples > 0 ? data.train.head(options.train_samples) : data.train;
  TrainRunResult r;
  r.model = build_model(parse_arch(options.arch), train_data.sample_shape(), train_data.num_classes, options.train.seed,
                        train_data.images.dtype());
  if (options.on_start) options.on_start(r.model, train_data.size());
  r.report = train(r.model, train_data, options.train);
  for (const auto& [key, value] : options.metadata) r.model.metadata[key] = value;
  r.test = evaluate(r.model, data.test);
  return r;
}

DistillRunResult run_distill(const Graph& teacher, const DatasetSplits& data, const DistillRunOptions& options) {
  const Dataset train_data = options.train_samples > 0 ? data.train.head(options.train_samples) : data.train;
  DistillRunResult r;
  if (options.student) {
    if (is_quantized(*options.student) || is_qat_model(*options.student))
      throw Error(ErrorKind::InvalidArgument, "the student is not a float model");
    r.student = *options.student;
  } else {
    if (options.train.epochs == 0)
      throw Error(ErrorKind::InvalidArgument, "a new student needs training epochs (0 epochs only fine-tunes a trained student)");
    r.student = build_model(parse_arch(options.student_arch), train_data.sample_shape(), train_data.num_classes,
                            options.train.seed, train_data.images.dtype());
  }
  r.parameters = r.student.parameter_count();
  TrainOptions train_options = options.train;
  TeacherLogits logits;
  if (options.teacher_cache.empty()) {
    train_options.distill.teacher = &teacher;
  } else {
    logits = teacher_logits(teacher, train_data, options.teacher_cache);
    r.teacher_cache_hit = logits.from_cache;
    r.teacher_cache_note = logits.note;
    train_options.distill.teacher_logits = &logits.logits;
  }
  r.teacher_test = evaluate(teacher, data.test);
  if (options.on_ready) options.on_ready(r);
  if (train_options.epochs > 0) {
    r.report = train(r.student, train_data, train_options);
    for (const auto& [key, value] : options.metadata) r.student.metadata[key] = value;
  }
  r.float_test = evaluate(r.student, data.test);
  if (options.on_float_done) options.on_float_done(r);
  if (options.quantize) {
    QatRunOptions q = *options.quantize;
    q.train.distill = train_options.distill;  // the same teacher (or its logits), T and alpha
    r.qat = run_qat(r.student, train_data, data.test, q);
    r.student = r.qat->model;
  }
  return r;
}

}  // namespace lowbit
