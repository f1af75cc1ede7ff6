// lowbit/idx.h - image classification data in IDX files (the MNIST family's format).
//
// A dataset directory holds the four standard files, each optionally gzip-compressed (.gz):
//     train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte
// Fashion-MNIST from Debian's dataset-fashion-mnist is the default.
//
//   lowbit::DatasetSplits data = lowbit::load_dataset_dir(lowbit::default_dataset_dir());
//   data.train.size();          // 60000
//   data.train.images.shape();  // [60000, 28, 28], u8
//   data.train.labels[0];       // 0..9
//
// Every reading error names the file and the problem (missing, truncated, wrong magic, count
// mismatch, label out of range) and is thrown as lowbit::Error.
#pragma once

#include <string>

#include "lowbit/dataset.h"
#include "lowbit/tensor.h"

namespace lowbit {

const char* default_dataset_dir();  // /usr/share/datasets/fashion-mnist

// Reads one IDX file of unsigned bytes (gzip or plain, detected from the content).
Tensor read_idx(const std::string& path);
// Writes a u8 tensor as IDX, gzip-compressed if `gzip`. Atomic: a temporary file is renamed.
void write_idx(const std::string& path, const Tensor& tensor, bool gzip);

Dataset load_dataset(const std::string& images_path, const std::string& labels_path);
// Finds the four files in `dir` (plain or .gz) and loads both splits.
DatasetSplits load_dataset_dir(const std::string& dir);

}  // namespace lowbit
