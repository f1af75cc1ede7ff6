// Internal: how finely parallel loops over planes, rows or channels split their work.
#pragma once

#include <algorithm>
#include <cstdint>

namespace lowbit::kernels {

// Grain for parallel_for over units (planes, rows, channels) of `size` elements each: at least
// `per_task` (default ~16k) elements per task, so that a fork-join is worth its cost.
inline int64_t plane_grain(int64_t size, int64_t per_task = 16384) {
  return std::max<int64_t>(1, per_task / std::max<int64_t>(size, 1));
}

}  // namespace lowbit::kernels
