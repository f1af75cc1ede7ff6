// run_qat(): the steps of `lowbit qat` (include/lowbit/workflow.h).
#include <algorithm>
#include <cmath>

#include "lowbit/distill.h"
#include "lowbit/train.h"
#include "lowbit/workflow.h"

namespace lowbit {

QatRunResult run_qat(const Graph& float_model, const Dataset& train, const Dataset& test, const QatRunOptions& options) {
  QatRunResult r;
  TrainOptions train_options = options.train;
  TeacherLogits logits;
  if (options.teacher) {
    if (train_options.distill.enabled())
      throw Error(ErrorKind::InvalidArgument, "run_qat: a teacher in the options and another in train.distill; give one");
    logits = teacher_logits(*options.teacher, train, options.teacher_cache);
    r.teacher_cache_hit = logits.from_cache;
    r.teacher_cache_note = logits.note;
    train_options.distill.teacher_logits = &logits.logits;
  }
  r.float_test = evaluate(float_model, test);
  if (options.on_ready) options.on_ready(r);
  CalibrationOptions c;
  c.samples = options.calibration_samples;
  r.fake_quantized = prepare_qat(float_model, options.qat, calibrate(float_model, train, c));
  r.report = train_qat(r.fake_quantized, train, train_options, options.qat);
  r.model = convert_qat(r.fake_quantized);

  // The fake-quantized model against the integer model, on the whole test set.
  const Tensor a = compute_logits(r.fake_quantized, test), b = compute_logits(r.model, test);
  const int64_t n = a.dim(0), classes = a.dim(1);
  int64_t agree = 0, correct_fq = 0, correct_q = 0;
  double max_diff = 0, sum_diff = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* ra = a.data<float>() + i * classes;
    const float* rb = b.data<float>() + i * classes;
    const int64_t pa = std::max_element(ra, ra + classes) - ra, pb = std::max_element(rb, rb + classes) - rb;
    agree += pa == pb;
    correct_fq += pa == test.labels[i];
    correct_q += pb == test.labels[i];
    for (int64_t k = 0; k < classes; ++k) {
      const double d = std::fabs(static_cast<double>(ra[k]) - rb[k]);
      max_diff = std::max(max_diff, d);
      sum_diff += d;
    }
  }
  const double denominator = static_cast<double>(std::max<int64_t>(n, 1));
  r.test_samples = n;
  r.fake_quantized_accuracy = static_cast<double>(correct_fq) / denominator;
  r.accuracy = static_cast<double>(correct_q) / denominator;
  r.agreement = static_cast<double>(agree) / denominator;
  r.max_logit_difference = max_diff;
  r.mean_logit_difference = sum_diff / std::max<double>(1, static_cast<double>(n * classes));
  return r;
}

}  // namespace lowbit
