// Dataset: labelled samples in memory (include/lowbit/dataset.h); the IDX reader is io's.
#include "lowbit/dataset.h"

#include <algorithm>
#include <cstring>

namespace lowbit {

Shape Dataset::sample_shape() const { return Shape(images.shape().begin() + 1, images.shape().end()); }

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  begin = std::clamp<int64_t>(begin, 0, size());
  end = std::clamp<int64_t>(end, begin, size());
  Dataset out;
  Shape shape = images.shape();
  shape[0] = end - begin;
  out.images = Tensor(DType::U8, shape);
  const int64_t per_sample = images.numel() / std::max<int64_t>(size(), 1);
  std::memcpy(out.images.raw(), images.data<uint8_t>() + begin * per_sample, static_cast<size_t>((end - begin) * per_sample));
  out.labels.assign(labels.begin() + begin, labels.begin() + end);
  out.num_classes = num_classes;
  return out;
}

Dataset Dataset::head(int64_t count) const { return slice(0, count); }

}  // namespace lowbit
