// lowbit/distill.h - knowledge distillation: a teacher's logits, computed once and cached on disk.
//
// Distillation itself is a training option (TrainOptions::distill, see train.h): the loss becomes
//     alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels).
// With no augmentation a teacher's logits for a training sample never change, so they are computed
// once (one inference pass) and kept in a cache file keyed by the teacher's bytes and the data's
// bytes: a retrained teacher or different data never reuses stale logits.
//
//   lowbit::Graph teacher = lowbit::load_model("teacher.lbm");
//   lowbit::TeacherLogits t = lowbit::teacher_logits(teacher, data.train, "teacher.lbm.logits");
//   lowbit::TrainOptions options;
//   options.distill.teacher_logits = &t.logits;
//   options.distill.temperature = 4, options.distill.alpha = 0.7f;
//   lowbit::train(student, data.train, options);
#pragma once

#include <string>

#include "lowbit/dataset.h"
#include "lowbit/graph.h"
#include "lowbit/tensor.h"

namespace lowbit {

struct TeacherLogits {
  Tensor logits;           // f32 [samples, classes], row i for sample i
  std::string key;         // fingerprint of the teacher and the data
  bool from_cache = false;
  std::string note;        // why the cache was (re)built; empty when it was used or not asked for
};

// Hex fingerprint of the teacher (its serialized bytes) and the data (images, labels, shape).
std::string teacher_logits_key(const Graph& teacher, const Dataset& data);

// The teacher's logits for every sample of `data`. With a non-empty `cache_path`: reuses the file if
// its key, size and checksum match; otherwise (missing, stale, damaged) computes the logits and
// rewrites the file atomically, saying why in `note`. An unwritable cache path is an Error(Io).
TeacherLogits teacher_logits(const Graph& teacher, const Dataset& data, const std::string& cache_path);

}  // namespace lowbit
