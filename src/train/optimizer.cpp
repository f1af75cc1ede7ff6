#include <algorithm>
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

void Sgd::step(std::vector<Parameter>& parameters, int part, int parts) {
  velocity_.resize(parameters.size());
  for (size_t p = 0; p < parameters.size(); ++p) {
    float* w = parameters[p].value.data<float>();
    const float* g = parameters[p].grad->data<float>();
    const int64_t n = parameters[p].value.numel();
    const auto [first, last] = piece(n, part, parts);
    const float lr = lr_ * parameters[p].learning_rate_scale;
    if (momentum_ == 0.0f) {
      for (int64_t i = first; i < last; ++i) w[i] -= lr * g[i];
      continue;
    }
    auto& v = velocity_[p];
    v.resize(static_cast<size_t>(n), 0.0f);
    for (int64_t i = first; i < last; ++i) {
      v[i] = momentum_ * v[i] - lr * g[i];
      w[i] += v[i];
    }
  }
}

void Adam::step(std::vector<Parameter>& parameters, int part, int parts) {
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
    const int64_t n = parameters[p].value.numel();
    const auto [first, last] = piece(n, part, parts);
    m_[p].resize(static_cast<size_t>(n), 0.0f);
    v_[p].resize(static_cast<size_t>(n), 0.0f);
    float* w = parameters[p].value.data<float>() + first;
    const float* g = parameters[p].grad->data<float>() + first;
    float* m = m_[p].data() + first;
    float* v = v_[p].data() + first;
    parallel_for(last - first, 1 << 15, [&](int64_t begin, int64_t end) {
      adam_update_f32(end - begin, w + begin, g + begin, m + begin, v + begin, constants);
    });
  }
}

}  // namespace lowbit

namespace lowbit {
namespace {
// Optimizer state as tensors: one f32 vector per parameter under "<kind>/<parameter>" (absent
// before the first step that needs it), and scalars as one-element tensors.
void put_vectors(std::map<std::string, Tensor>& out, const std::string& kind, const std::vector<std::vector<float>>& vectors,
                 const std::vector<Parameter>& parameters) {
  for (size_t p = 0; p < vectors.size() && p < parameters.size(); ++p) {
    if (vectors[p].empty()) continue;
    Tensor t(DType::F32, {static_cast<int64_t>(vectors[p].size())});
    std::copy(vectors[p].begin(), vectors[p].end(), t.data<float>());
    out.emplace(kind + "/" + parameters[p].name, std::move(t));
  }
}

std::vector<std::vector<float>> get_vectors(const std::map<std::string, Tensor>& state, const std::string& kind,
                                            const std::vector<Parameter>& parameters) {
  std::vector<std::vector<float>> vectors(parameters.size());
  for (size_t p = 0; p < parameters.size(); ++p) {
    auto it = state.find(kind + "/" + parameters[p].name);
    if (it == state.end()) continue;
    const Tensor& t = it->second;
    if (t.dtype() != DType::F32 || t.rank() != 1 || t.numel() != parameters[p].value.numel())
      throw Error(ErrorKind::Format, "optimizer state '" + it->first + "' is " + name_of(t.dtype()) + to_string(t.shape()) +
                                         ", expected f32[" + std::to_string(parameters[p].value.numel()) + "] (the parameter's size)");
    vectors[p].assign(t.data<float>(), t.data<float>() + t.numel());
  }
  for (const auto& entry : state) {
    const std::string& name = entry.first;
    if (name.rfind(kind + "/", 0) == 0 && std::none_of(parameters.begin(), parameters.end(), [&](const Parameter& p) {
          return name == kind + "/" + p.name;
        }))
      throw Error(ErrorKind::Format, "optimizer state '" + name + "' belongs to no parameter of the model");
  }
  return vectors;
}
}  // namespace

std::map<std::string, Tensor> Sgd::state(const std::vector<Parameter>& parameters) const {
  std::map<std::string, Tensor> out;
  put_vectors(out, "sgd.velocity", velocity_, parameters);
  return out;
}

void Sgd::set_state(const std::map<std::string, Tensor>& state, const std::vector<Parameter>& parameters) {
  for (const auto& [name, t] : state)
    if (name.rfind("sgd.velocity/", 0) != 0)
      throw Error(ErrorKind::Format, "optimizer state '" + name + "' is not SGD's (was it saved by another optimizer?)");
  velocity_ = get_vectors(state, "sgd.velocity", parameters);
}

std::map<std::string, Tensor> Adam::state(const std::vector<Parameter>& parameters) const {
  std::map<std::string, Tensor> out;
  Tensor t(DType::S64, {1});
  t.data<int64_t>()[0] = t_;
  out.emplace("adam.t", std::move(t));
  put_vectors(out, "adam.m", m_, parameters);
  put_vectors(out, "adam.v", v_, parameters);
  return out;
}

void Adam::set_state(const std::map<std::string, Tensor>& state, const std::vector<Parameter>& parameters) {
  auto it = state.find("adam.t");
  if (it == state.end() || it->second.dtype() != DType::S64 || it->second.numel() != 1 || it->second.data<int64_t>()[0] < 0)
    throw Error(ErrorKind::Format, "optimizer state 'adam.t' (Adam's step count) is missing or not one non-negative s64");
  for (const auto& [name, t] : state)
    if (name != "adam.t" && name.rfind("adam.m/", 0) != 0 && name.rfind("adam.v/", 0) != 0)
      throw Error(ErrorKind::Format, "optimizer state '" + name + "' is not Adam's (was it saved by another optimizer?)");
  t_ = it->second.data<int64_t>()[0];
  m_ = get_vectors(state, "adam.m", parameters);
  v_ = get_vectors(state, "adam.v", parameters);
}

}  // namespace lowbit
