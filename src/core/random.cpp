#include "lowbit/random.h"

#include <cmath>
#include <utility>

namespace lowbit {

uint32_t Rng::below(uint32_t bound) noexcept {
  // Reject the top partial copy of [0, bound) so every value is equally likely.
  const uint64_t limit = (uint64_t{1} << 32) - ((uint64_t{1} << 32) % bound);
  for (;;) {
    uint64_t r = next_u64() >> 32;
    if (r < limit) return static_cast<uint32_t>(r % bound);
  }
}

float Rng::normal() noexcept {
  // u1 in (0, 1] so that log(u1) is finite.
  double u1 = (static_cast<double>(next_u64() >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double u2 = static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

void Rng::shuffle(std::span<uint32_t> values) noexcept {
  for (size_t i = values.size(); i > 1; --i) {
    size_t j = below(static_cast<uint32_t>(i));
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace lowbit
