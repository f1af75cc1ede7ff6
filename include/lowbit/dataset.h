// lowbit/dataset.h - labelled classification data in memory: what training, evaluation,
// calibration and distillation read. Files of the MNIST family's IDX format load into it with
// lowbit/idx.h; arrays the caller holds (numpy's, a program's) with make_dataset.
//
//   lowbit::DatasetSplits data = lowbit::load_dataset_dir(lowbit::default_dataset_dir());
//   data.train.size();          // 60000
//   data.train.images.shape();  // [60000, 28, 28], u8
//   lowbit::Dataset first = data.train.head(1000);   // a copy of the first 1000 samples
//
//   // 100 samples of 64 float features, 3 classes:
//   lowbit::Dataset mine = lowbit::make_dataset(lowbit::Tensor(lowbit::DType::F32, {100, 64}),
//                                               std::vector<int32_t>(100, 0), 3);
//   // Unlabelled samples of a model with several named inputs (e.g. a BERT's token ids and mask),
//   // for calibration: lowbit::read_npz_dataset("calib.npz") (lowbit/npy.h) makes the same.
//   lowbit::Dataset tokens = lowbit::make_input_dataset({{"input_ids", lowbit::Tensor(lowbit::DType::S64, {8, 128})},
//                                                        {"attention_mask", lowbit::Tensor(lowbit::DType::S64, {8, 128})}});
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "lowbit/tensor.h"

namespace lowbit {

// The samples are u8 image bytes (IDX files: [count, rows, cols]), which a model scales (in its
// graph, or by its input_scale when its input is f32), or f32 values of any sample shape
// ([count, features], [count, channels, rows, cols] ...), which a model with an f32 input reads
// as they are.
struct Dataset {
  Tensor images;                // u8 or f32, [count, ...sample shape]
  std::vector<int32_t> labels;  // one per sample, 0 .. num_classes - 1
  int num_classes = 0;          // 1 + the largest label
  // Named model inputs, each [count, ...], unlabelled (no images, no labels): they feed a model's
  // inputs by name (feed_batch in lowbit/train.h) for what needs no labels: calibration, GPTQ's
  // Hessians, SmoothQuant's statistics. Training and evaluation refuse them.
  std::vector<std::pair<std::string, Tensor>> inputs;
  int64_t size() const { return inputs.empty() ? static_cast<int64_t>(labels.size()) : inputs.front().second.dim(0); }
  // Sample shape without the count, e.g. [28, 28].
  Shape sample_shape() const;
  // The first `count` samples (or all if fewer); shares nothing with this dataset.
  Dataset head(int64_t count) const;
  // Samples [begin, end) as a new dataset.
  Dataset slice(int64_t begin, int64_t end) const;
};

struct DatasetSplits {
  Dataset train, test;
};

// A dataset over `samples` (u8 or f32, [count, ...], shared, not copied) and their labels.
// num_classes 0 takes 1 + the largest label. Throws Error(InvalidArgument) naming what is wrong:
// another dtype, no sample dimension, a count that differs from the labels', a label outside
// 0 .. num_classes - 1, no samples.
Dataset make_dataset(Tensor samples, std::vector<int32_t> labels, int num_classes = 0);
// Unlabelled named inputs (see Dataset::inputs). Throws Error(InvalidArgument) naming the input at
// fault: none given, a name given twice, a tensor without a sample dimension, counts that differ.
Dataset make_input_dataset(std::vector<std::pair<std::string, Tensor>> inputs);

}  // namespace lowbit
