// lowbit/dataset.h - labelled image classification data in memory: what training, evaluation,
// calibration and distillation read. Files of the MNIST family's IDX format load into it with
// lowbit/idx.h.
//
//   lowbit::DatasetSplits data = lowbit::load_dataset_dir(lowbit::default_dataset_dir());
//   data.train.size();          // 60000
//   data.train.images.shape();  // [60000, 28, 28], u8
//   lowbit::Dataset first = data.train.head(1000);   // a copy of the first 1000 samples
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/tensor.h"

namespace lowbit {

struct Dataset {
  Tensor images;                // u8, [count, rows, cols]
  std::vector<int32_t> labels;  // one per image, 0 .. num_classes - 1
  int num_classes = 0;          // 1 + the largest label
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Image shape without the count, e.g. [28, 28].
  Shape sample_shape() const;
  // The first `count` samples (or all if fewer); shares nothing with this dataset.
  Dataset head(int64_t count) const;
  // Samples [begin, end) as a new dataset.
  Dataset slice(int64_t begin, int64_t end) const;
};

struct DatasetSplits {
  Dataset train, test;
};

}  // namespace lowbit
