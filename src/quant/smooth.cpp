// smooth_activations (include/lowbit/quantize.h): SmoothQuant's per-channel migration of
// activation outliers from a LayerNorm's output into the Dense layers that read it.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "lowbit/executor.h"
#include "lowbit/quantize.h"
#include "lowbit/train.h"

namespace lowbit {
namespace {

// A LayerNorm whose output Dense layers read, with what smoothing touches.
struct Site {
  std::string norm, value;           // the LayerNormalization node and its output
  std::string scale, bias;           // its initializers (n values)
  std::vector<std::string> readers;  // the Dense layers reading the output
  std::vector<std::string> weights;  // their weights [units, n]
  int64_t n = 0;
  bool fold = false;                 // only Dense layers read it: 1 / s goes into the scale and bias
};

std::vector<Site> find_sites(const Graph& g) {
  std::map<std::string, std::vector<const Node*>> readers;
  for (const auto& node : g.nodes)
    for (const auto& in : node.inputs) readers[in].push_back(&node);
  std::vector<Site> sites;
  for (const auto& node : g.nodes) {
    if (node.op != "LayerNormalization" || node.outputs.size() != 1 || node.inputs.size() != 3) continue;
    if (node.attr_int("axis", -1) != -1) continue;
    const std::string& value = node.outputs[0];
    auto scale = g.initializers.find(node.inputs[1]), bias = g.initializers.find(node.inputs[2]);
    if (scale == g.initializers.end() || bias == g.initializers.end()) continue;
    const int64_t n = scale->second.numel();
    if (scale->second.dtype() != DType::F32 || bias->second.dtype() != DType::F32 || bias->second.numel() != n || n < 2) continue;
    Site site{node.name, value, node.inputs[1], node.inputs[2], {}, {}, n, true};
    for (const Node* u : readers[value]) {
      auto w = u->inputs.size() > 1 ? g.initializers.find(u->inputs[1]) : g.initializers.end();
      const bool dense = u->op == "Dense" && u->inputs[0] == value && w != g.initializers.end() && w->second.dtype() == DType::F32 &&
                         w->second.rank() == 2 && w->second.dim(1) == n;
      if (dense) {
        site.readers.push_back(u->name);
        site.weights.push_back(u->inputs[1]);
      } else {
        site.fold = false;  // another reader (a residual Add, a graph output) needs the unscaled values
      }
    }
    if (std::find(g.outputs.begin(), g.outputs.end(), value) != g.outputs.end()) site.fold = false;
    if (!site.readers.empty()) sites.push_back(std::move(site));
  }
  // A weight read by several sites (or twice) would be scaled twice: leave such sites alone.
  std::map<std::string, int> uses;
  for (const auto& s : sites)
    for (const auto& w : s.weights) ++uses[w];
  std::erase_if(sites, [&](const Site& s) { return std::any_of(s.weights.begin(), s.weights.end(), [&](const auto& w) { return uses[w] > 1; }); });
  return sites;
}

}  // namespace

Graph smooth_activations(const Graph& model, const Dataset& data, const SmoothOptions& options, std::vector<std::string>* smoothed) {
  if (!(options.alpha >= 0.0 && options.alpha <= 1.0))
    throw Error(ErrorKind::InvalidArgument, "smoothing strength alpha must be in [0, 1], got " + std::to_string(options.alpha));
  if (options.samples < 1) throw Error(ErrorKind::InvalidArgument, "smoothing needs at least one calibration sample");
  Graph g = model;
  const std::vector<Site> sites = find_sites(g);
  if (smoothed) smoothed->clear();
  if (sites.empty()) return g;
  // max |x_j| of every site's output, over the calibration samples.
  std::map<std::string, std::vector<float>> act;
  for (const auto& s : sites) act[s.value].assign(static_cast<size_t>(s.n), 0.0f);
  Executor run(model);
  const int64_t count = std::min(options.samples, data.size());
  std::vector<uint32_t> indices;
  for (int64_t begin = 0; begin < count; begin += options.batch_size) {
    const int64_t b = std::min<int64_t>(options.batch_size, count - begin);
    indices.resize(static_cast<size_t>(b));
    std::iota(indices.begin(), indices.end(), static_cast<uint32_t>(begin));
    feed_batch(data, indices, model, run);
    run.forward();
    for (auto& [value, m] : act) {
      const Tensor& x = run.value(value);
      const int64_t n = static_cast<int64_t>(m.size()), rows = x.numel() / n;
      const float* p = x.data<float>();
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) m[static_cast<size_t>(j)] = std::max(m[static_cast<size_t>(j)], std::fabs(p[r * n + j]));
    }
  }
  for (const auto& s : sites) {
    std::vector<float> w_max(static_cast<size_t>(s.n), 0.0f);
    for (const auto& w : s.weights) {
      const Tensor& t = g.initializers.at(w);
      for (int64_t i = 0; i < t.dim(0); ++i)
        for (int64_t j = 0; j < s.n; ++j)
          w_max[static_cast<size_t>(j)] = std::max(w_max[static_cast<size_t>(j)], std::fabs(t.data<float>()[i * s.n + j]));
    }
    std::vector<float> factor(static_cast<size_t>(s.n), 1.0f);
    const std::vector<float>& a_max = act.at(s.value);
    for (size_t j = 0; j < factor.size(); ++j)
      if (a_max[j] > 0.0f && w_max[j] > 0.0f && std::isfinite(a_max[j]))
        factor[j] = static_cast<float>(std::pow(static_cast<double>(a_max[j]), options.alpha) /
                                       std::pow(static_cast<double>(w_max[j]), 1.0 - options.alpha));
    // Fresh tensors (a copied graph shares its initializers' storage with the model).
    if (s.fold) {
      for (const std::string& name : {s.scale, s.bias}) {
        Tensor t = g.initializers.at(name).clone();
        for (int64_t j = 0; j < s.n; ++j) t.data<float>()[j] /= factor[static_cast<size_t>(j)];
        g.initializers[name] = std::move(t);
      }
    } else {
      // Other readers need the LayerNorm's own values: a Mul by 1 / s feeds the Dense readers only
      // (post-norm encoders such as BERT, whose LayerNorm output is also the residual stream).
      Tensor inverse(DType::F32, {s.n});
      for (int64_t j = 0; j < s.n; ++j) inverse.data<float>()[j] = 1.0f / factor[static_cast<size_t>(j)];
      const std::string mul = s.norm + ".smooth", out = s.value + ".smooth";
      g.initializers[mul + ".inverse"] = std::move(inverse);
      const int at = g.producer(s.value);
      g.nodes.insert(g.nodes.begin() + at + 1, Node{mul, "Mul", {s.value, mul + ".inverse"}, {out}});
      for (auto& node : g.nodes)
        if (std::find(s.readers.begin(), s.readers.end(), node.name) != s.readers.end()) node.inputs[0] = out;
    }
    for (const auto& w : s.weights) {
      Tensor t = g.initializers.at(w).clone();
      for (int64_t i = 0; i < t.dim(0); ++i)
        for (int64_t j = 0; j < s.n; ++j) t.data<float>()[i * s.n + j] *= factor[static_cast<size_t>(j)];
      g.initializers[w] = std::move(t);
    }
    if (smoothed) smoothed->push_back(s.norm);
  }
  g.validate();
  return g;
}

}  // namespace lowbit
