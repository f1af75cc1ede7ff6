#include <cmath>

#include "lowbit/train.h"

namespace lowbit {

Init init_from_name(const std::string& name) {
  if (name == "glorot_uniform") return Init::GlorotUniform;
  if (name == "he_normal") return Init::HeNormal;
  if (name == "he_uniform") return Init::HeUniform;
  if (name == "zeros") return Init::Zeros;
  throw Error(ErrorKind::InvalidArgument,
              "unknown initializer '" + name + "' (expected glorot_uniform, he_normal, he_uniform or zeros)");
}

const char* name_of(Init init) noexcept {
  switch (init) {
    case Init::GlorotUniform: return "glorot_uniform";
    case Init::HeNormal: return "he_normal";
    case Init::HeUniform: return "he_uniform";
    case Init::Zeros: return "zeros";
  }
  return "?";
}

void initialize(Tensor& tensor, Init init, int64_t fan_in, int64_t fan_out, Rng& rng) {
  float* w = tensor.data<float>();
  const int64_t n = tensor.numel();
  switch (init) {
    case Init::Zeros:
      for (int64_t i = 0; i < n; ++i) w[i] = 0.0f;
      break;
    case Init::GlorotUniform: {
      float limit = static_cast<float>(std::sqrt(6.0 / static_cast<double>(fan_in + fan_out)));
      for (int64_t i = 0; i < n; ++i) w[i] = rng.uniform(-limit, limit);
      break;
    }
    case Init::HeUniform: {
      float limit = static_cast<float>(std::sqrt(6.0 / static_cast<double>(fan_in)));
      for (int64_t i = 0; i < n; ++i) w[i] = rng.uniform(-limit, limit);
      break;
    }
    case Init::HeNormal: {
      float stddev = static_cast<float>(std::sqrt(2.0 / static_cast<double>(fan_in)));
      for (int64_t i = 0; i < n; ++i) w[i] = stddev * rng.normal();
      break;
    }
  }
}

}  // namespace lowbit
