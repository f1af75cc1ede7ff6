// lowbit/random.h - a small, portable, seeded random number generator.
//
// The standard library's distributions differ between implementations, so lowbit draws every
// random number (initial weights, shuffles, dropout masks, stochastic rounding) from this class:
// the same seed gives the same model bytes on every platform.
//
//   lowbit::Rng rng(seed);
//   float u = rng.uniform();          // [0, 1)
//   float g = rng.normal();           // mean 0, standard deviation 1
//   uint32_t i = rng.below(60000);    // unbiased integer in [0, 60000)
#pragma once

#include <cstdint>
#include <span>

namespace lowbit {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  // The generator's whole state: Rng(rng.state()) continues the same sequence (checkpoints).
  uint64_t state() const noexcept { return state_; }

  // SplitMix64: a 64-bit counter passed through a bijective mixer. Fast and statistically strong
  // enough for initialization and shuffling; not for cryptography.
  uint64_t next_u64() noexcept {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // 24 random bits scaled into [0, 1): exactly representable floats.
  float uniform() noexcept { return static_cast<float>(next_u64() >> 40) * (1.0f / 16777216.0f); }
  float uniform(float lo, float hi) noexcept { return lo + (hi - lo) * uniform(); }
  // Unbiased integer in [0, bound) by rejection; bound must be > 0.
  uint32_t below(uint32_t bound) noexcept;
  // Standard normal by the Box-Muller transform (in double, so the result is reproducible).
  float normal() noexcept;
  // Fisher-Yates shuffle.
  void shuffle(std::span<uint32_t> values) noexcept;

 private:
  uint64_t state_;
};

}  // namespace lowbit
