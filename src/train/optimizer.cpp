#include <cmath>

#include "kernels/elementwise.h"
#include "lowbit/runtime_config.h"
#include "lowbit/train.h"

namespace lowbit {

std::unique_ptr<Optimizer> Optimizer::create(const OptimizerOptions& o) {
  if (!(o.learning_rate > 0.0f)) throw Error(ErrorKind::InvalidArgument, "learning rate must be positive");
  if (o.schedule != "constant" && o.schedule != "cosine")
    throw Error(ErrorKind::InvalidArgument, "unknown learning-rate schedule '" + o.schedule + "' (expected constant or cosine)");
  if (o.name == "adam") return std::make_unique<Adam>(o.learning_rate, o.beta1, o.beta2, o.epsilon);
  if (o.name == "sgd") return std::make_unique<Sgd>(o.learning_rate, o.momentum);
  throw Error(ErrorKind::InvalidArgument, "unknown optimizer '" + o.name + "' (expected adam or sgd)");
}

void Sgd::step(std::vector<Parameter>& parameters) {
  velocity_.resize(parameters.size());
  for (size_t p = 0; p < parameters.size(); ++p) {
    float* w = parameters[p].value.data<float>();
    const float* g = parameters[p].grad->data<float>();
    const int64_t n = parameters[p].value.numel();
    const float lr = lr_ * parameters[p].learning_rate_scale;
    if (momentum_ == 0.0f) {
      for (int64_t i = 0; i < n; ++i) w[i] -= lr * g[i];
      continue;
    }
    auto& v = velocity_[p];
    v.resize(static_cast<size_t>(n), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      v[i] = momentum_ * v[i] - lr * g[i];
      w[i] += v[i];
    }
  }
}

void Adam::step(std::vector<Parameter>& parameters) {
  ++t_;
  m_.resize(parameters.size());
  v_.resize(parameters.size());
  // Bias corrections folded into two scalars: w -= step * m / (sqrt(v) * root + eps), which is
  // lr * m_hat / (sqrt(v_hat) + eps) with m_hat = m / c1, v_hat = v / c2.
  const double c1 = 1.0 - std::pow(static_cast<double>(beta1_), static_cast<double>(t_));
  const double c2 = 1.0 - std::pow(static_cast<double>(beta2_), static_cast<double>(t_));
  const float step = static_cast<float>(lr_ / c1);
  const float inv_root = static_cast<float>(1.0 / std::sqrt(c2));
  for (size_t p = 0; p < parameters.size(); ++p) {
    const AdamConstants constants{beta1_, beta2_, step * parameters[p].learning_rate_scale, inv_root, epsilon_};
    float* w = parameters[p].value.data<float>();
    const float* g = parameters[p].grad->data<float>();
    const int64_t n = parameters[p].value.numel();
    m_[p].resize(static_cast<size_t>(n), 0.0f);
    v_[p].resize(static_cast<size_t>(n), 0.0f);
    float* m = m_[p].data();
    float* v = v_[p].data();
    parallel_for(n, 1 << 15, [&](int64_t begin, int64_t end) {
      adam_update_f32(end - begin, w + begin, g + begin, m + begin, v + begin, constants);
    });
  }
}

}  // namespace lowbit
