// lowbit/npy.h - numpy's .npy and .npz files: named tensors in and out. `lowbit run` reads a
// model's inputs from them and writes its outputs to them, so that any model (token ids, masks,
// features: not only IDX images) can be fed from numpy and its results read back with numpy.load.
//
//   // Python: np.savez("feeds.npz", input=np.zeros((2, 1, 28, 28), np.float32))
//   std::vector<lowbit::NamedTensor> feeds = lowbit::read_arrays("feeds.npz");
//   feeds[0].name;                          // "input"
//   feeds[0].tensor.shape();                // [2, 1, 28, 28], f32
//   lowbit::write_arrays("outputs.npz", {{"logits", feeds[0].tensor}});
//
// dtypes: float32 (f32), float16 (f16), int64 (s64), int32 (s32), uint8 (u8), int8 (s8) and bool,
// little-endian, C order (Fortran order and big-endian data are refused, with the reason). An
// .npz is a zip archive of .npy files (np.savez, stored; np.savez_compressed, deflated: both are
// read; lowbit writes stored entries); an .npy holds one array, named after the file (x.npy: "x").
// Every error names the file, the array and what was expected; claimed sizes are checked against
// the bytes the file holds before anything is allocated; writes are atomic (a temporary file
// renamed over the target).
#pragma once

#include <string>
#include <vector>

#include "lowbit/dataset.h"
#include "lowbit/tensor.h"

namespace lowbit {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// One .npy file's array.
Tensor read_npy(const std::string& path);
// Every array of an .npz file, in archive order, named as numpy names them (the entry name
// without ".npy").
std::vector<NamedTensor> read_npz(const std::string& path);
// .npz or .npy, by the file's content (an .npy's array is named after the file, without ".npy").
std::vector<NamedTensor> read_arrays(const std::string& path);

// Every array of an .npz / .npy as one unlabelled named-input dataset (make_input_dataset: each
// array [count, ...], the same count): calibration data for models with named inputs, e.g.
// `lowbit quantize --calib-data calib.npz` for a BERT. Errors name the file.
Dataset read_npz_dataset(const std::string& path);

void write_npy(const std::string& path, const Tensor& tensor);
// An .npz of stored (uncompressed) entries, numpy.load-able; names must be unique and non-empty.
void write_npz(const std::string& path, const std::vector<NamedTensor>& arrays);
// .npz, or .npy when the path ends in ".npy" (one array).
void write_arrays(const std::string& path, const std::vector<NamedTensor>& arrays);

}  // namespace lowbit
