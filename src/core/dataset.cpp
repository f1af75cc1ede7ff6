// Dataset: labelled samples in memory (include/lowbit/dataset.h); the IDX reader is io's.
#include "lowbit/dataset.h"

#include <algorithm>
#include <cstring>

namespace lowbit {

Shape Dataset::sample_shape() const {
  if (images.rank() < 1) return {};  // no images (named inputs, or empty)
  return Shape(images.shape().begin() + 1, images.shape().end());
}

namespace {
// Rows [begin, end) of a [count, ...] tensor, copied.
Tensor rows_of(const Tensor& t, int64_t begin, int64_t end) {
  Shape shape = t.shape();
  shape[0] = end - begin;
  Tensor out(t.dtype(), shape);
  const size_t per_sample = t.nbytes() / static_cast<size_t>(std::max<int64_t>(t.dim(0), 1));
  std::memcpy(out.raw(), static_cast<const std::byte*>(t.raw()) + static_cast<size_t>(begin) * per_sample,
              static_cast<size_t>(end - begin) * per_sample);
  return out;
}
}  // namespace

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  begin = std::clamp<int64_t>(begin, 0, size());
  end = std::clamp<int64_t>(end, begin, size());
  Dataset out;
  if (!inputs.empty()) {
    for (const auto& [name, t] : inputs) out.inputs.emplace_back(name, rows_of(t, begin, end));
    return out;
  }
  out.images = rows_of(images, begin, end);
  out.labels.assign(labels.begin() + begin, labels.begin() + end);
  out.num_classes = num_classes;
  return out;
}

Dataset Dataset::head(int64_t count) const { return slice(0, count); }

Dataset make_input_dataset(std::vector<std::pair<std::string, Tensor>> inputs) {
  auto fail = [](const std::string& what) { throw Error(ErrorKind::InvalidArgument, "dataset: " + what); };
  if (inputs.empty()) fail("no named inputs");
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto& [name, t] = inputs[i];
    if (!t.defined() || t.rank() < 1 || t.dim(0) < 1)
      fail("input '" + name + "' has shape " + (t.defined() ? to_string(t.shape()) : std::string("(none)")) +
           "; expected [count, ...] with at least one sample");
    if (t.dim(0) != inputs[0].second.dim(0))
      fail("input '" + name + "' has " + std::to_string(t.dim(0)) + " samples, '" + inputs[0].first + "' " +
           std::to_string(inputs[0].second.dim(0)));
    for (size_t j = 0; j < i; ++j)
      if (inputs[j].first == name) fail("input '" + name + "' is given twice");
  }
  Dataset d;
  d.inputs = std::move(inputs);
  return d;
}

Dataset make_dataset(Tensor samples, std::vector<int32_t> labels, int num_classes) {
  auto fail = [](const std::string& what) { throw Error(ErrorKind::InvalidArgument, "dataset: " + what); };
  if (!samples.defined()) fail("the samples hold no data");
  if (samples.dtype() != DType::U8 && samples.dtype() != DType::F32)
    fail(std::string("the samples are ") + name_of(samples.dtype()) + "; expected u8 (image bytes) or f32 values");
  if (samples.rank() < 2)
    fail("the samples have shape " + to_string(samples.shape()) + "; expected [count, ...sample shape] (at least 2 dimensions)");
  if (samples.dim(0) != static_cast<int64_t>(labels.size()))
    fail(std::to_string(samples.dim(0)) + " samples but " + std::to_string(labels.size()) + " labels");
  if (labels.empty()) fail("no samples");
  if (num_classes < 0) fail("num_classes " + std::to_string(num_classes) + " is negative");
  const auto [lo, hi] = std::minmax_element(labels.begin(), labels.end());
  if (*lo < 0) fail("label " + std::to_string(*lo) + " (sample " + std::to_string(lo - labels.begin()) + ") is negative");
  if (num_classes == 0) num_classes = *hi + 1;
  if (*hi >= num_classes)
    fail("label " + std::to_string(*hi) + " (sample " + std::to_string(hi - labels.begin()) + ") is not below num_classes " +
         std::to_string(num_classes));
  Dataset d;
  d.images = std::move(samples);
  d.labels = std::move(labels);
  d.num_classes = num_classes;
  return d;
}

}  // namespace lowbit
