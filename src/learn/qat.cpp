// Quantization-aware training: the fake-quantization graph transform, its observers, and the
// conversion to the integer model. See include/lowbit/qat.h and docs/qat.md.
//
// Naming in a prepared graph (so conversion can find everything again):
//   weights:     node "<layer>.weight_fq" over the weight, initializers "<layer>.weight_fq.scale"
//                and "<layer>.weight_fq.zero_point"; attributes role "weight", layer, bits, scheme
//   activations: node "<value>.fq" over a Dense layer's input value, initializers "<value>.fq.scale"
//                and "<value>.fq.zero_point"; attributes role "activation", value
#include "lowbit/qat.h"
#include "lowbit/ops.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <nlohmann/json.hpp>

#include "kernels/elementwise.h"
#include "lowbit/runtime_config.h"

namespace lowbit {
namespace {

bool is_fake_quant(const Node& node) { return traits_of(node).fake_quantize; }

QuantSpec weight_spec(const LayerRule& rule) { return {rule.weight_bits, rule.weight_scheme, rule.per_channel, true, true}; }
const QuantSpec kActivationSpec{8, QScheme::Affine, false, true, false};

// LSQ's initial step size, 2 * mean(|w|) / sqrt(Q_P), per channel (symmetric weights).
QuantParams lsq_initial_weight_params(const Tensor& weight, const QuantSpec& spec) {
  QuantParams p = choose_weight_params(weight, spec);  // grid, channels and zero points
  if (spec.scheme != QScheme::Symmetric) return p;
  const int64_t channels = static_cast<int64_t>(p.channels()), per = weight.numel() / std::max<int64_t>(1, channels);
  for (int64_t c = 0; c < channels; ++c) {
    double sum = 0.0;
    for (int64_t i = 0; i < per; ++i) sum += std::fabs(weight.data<float>()[c * per + i]);
    const double mean = per ? sum / static_cast<double>(per) : 0.0;
    if (mean > 0.0) p.scale[c] = static_cast<float>(2.0 * mean / std::sqrt(static_cast<double>(p.qmax())));
  }
  return p;
}

void store(const QuantParams& p, Tensor& scale, Tensor& zero_point) {
  std::copy(p.scale.begin(), p.scale.end(), scale.data<float>());
  std::copy(p.zero_point.begin(), p.zero_point.end(), zero_point.data<int32_t>());
}

Node fake_quant_node(const std::string& name, const std::string& input, const QuantParams& p, bool lsq, Graph& g) {
  Tensor scale(DType::F32, {static_cast<int64_t>(p.channels())}), zero(DType::S32, {static_cast<int64_t>(p.channels())});
  store(p, scale, zero);
  g.initializers[name + ".scale"] = scale;
  g.initializers[name + ".zero_point"] = zero;
  return {name, lsq ? "LsqFakeQuantize" : "FakeQuantize", {input, name + ".scale", name + ".zero_point"}, {name},
          {{"qmin", p.qmin()}, {"qmax", p.qmax()}, {"axis", p.axis}, {"bits", p.bits}, {"scheme", name_of(p.scheme)}}};
}

// Parameters stored in a fake-quantization node's initializers.
QuantParams params_of(const Graph& g, const Node& node) {
  const Tensor& scale = g.initializers.at(node.inputs[1]);
  const Tensor& zero = g.initializers.at(node.inputs[2]);
  QuantParams p;
  p.bits = static_cast<int>(node.attr_int("bits", 8));
  p.is_signed = true;
  p.scheme = node.attr_string("scheme", "affine") == "symmetric" ? QScheme::Symmetric : QScheme::Affine;
  p.narrow_range = node.attr_int("qmin", -128) == -node.attr_int("qmax", 127);
  p.axis = static_cast<int>(node.attr_int("axis", -1));
  p.scale.assign(scale.data<float>(), scale.data<float>() + scale.numel());
  p.zero_point.assign(zero.data<int32_t>(), zero.data<int32_t>() + zero.numel());
  p.validate("fake-quantization node '" + node.name + "'");
  if (p.qmin() != node.attr_int("qmin", -128) || p.qmax() != node.attr_int("qmax", 127))
    throw Error(ErrorKind::Format, "fake-quantization node '" + node.name + "': grid [" +
                                       std::to_string(node.attr_int("qmin", -128)) + ", " +
                                       std::to_string(node.attr_int("qmax", 127)) + "] is not a " + std::to_string(p.bits) +
                                       "-bit grid");
  return p;
}

// Arms the observers of the fake-quantization nodes for training (FakeQuantize only; LSQ learns
// its grids): weights follow their current range every step ("minmax"), activations a moving
// average of the batch ranges ("moving_average", from the current grid's range, frozen from step
// `freeze_at`). The ops do the work in their training forward pass (src/graph/ops/fake_quant.cpp).
void arm_observers(Graph& model, const QatOptions& options, int64_t freeze_at) {
  for (auto& node : model.nodes) {
    if (!is_fake_quant(node) || traits_of(node).learns_scale) continue;
    if (node.attr_string("role", "") == "weight") {
      node.attributes["observer"] = "minmax";
      continue;
    }
    const QuantParams p = params_of(model, node);
    Tensor range(DType::F32, {2});
    range.data<float>()[0] = p.dequantize(p.qmin());
    range.data<float>()[1] = p.dequantize(p.qmax());
    const std::string name = node.name + ".range";
    model.initializers[name] = range;
    node.inputs.resize(3);
    node.inputs.push_back(name);
    node.attributes["observer"] = "moving_average";
    node.attributes["averaging"] = options.observer_averaging;
    node.attributes["observer_steps"] = freeze_at;
  }
}

// The training hooks of LSQ (learned scales get relative learning rates and stay positive) and,
// for min-max observers, the grids of the final weights.
class Observers final : public TrainHooks {
 public:
  Observers(Graph& model, const QatOptions& options) : lsq_(options.lsq) {
    for (const auto& node : model.nodes) {
      if (!is_fake_quant(node)) continue;
      Tensor scale = model.initializers.at(node.inputs[1]), zero = model.initializers.at(node.inputs[2]);
      scale_names_.insert(node.inputs[1]);
      if (node.attr_string("role", "") == "weight") {
        const QuantParams p = params_of(model, node);
        weights_.push_back({model.initializers.at(node.inputs[0]), scale, zero,
                            QuantSpec{p.bits, p.scheme, p.per_channel(), true, true}});
      } else {
        activation_scales_.push_back(scale);
      }
    }
  }

  // LSQ scales are small (1e-3 to 1e-1) and Adam moves every parameter by about the learning rate
  // per step, whatever its gradient's size. Scaling each scale's learning rate by its initial
  // mean value makes that a relative step of about the learning rate, as for the weights.
  void on_start(std::vector<Parameter>& parameters) override {
    if (!lsq_) return;
    for (auto& p : parameters) {
      if (!scale_names_.count(p.name)) continue;
      double sum = 0.0;
      for (int64_t i = 0; i < p.value.numel(); ++i) sum += p.value.data<float>()[i];
      p.learning_rate_scale = static_cast<float>(sum / static_cast<double>(std::max<int64_t>(1, p.value.numel())));
    }
  }

  void after_update(int64_t) override {
    if (!lsq_) return;
    auto keep_positive = [](Tensor& scale) {
      for (int64_t i = 0; i < scale.numel(); ++i) {
        float& s = scale.data<float>()[i];
        if (!(s >= 1e-8f)) s = 1e-8f;  // also replaces NaN
      }
    };
    for (auto& w : weights_) keep_positive(w.scale);
    for (auto& a : activation_scales_) keep_positive(a);
  }

  // Min-max weight grids from the current weights (learned LSQ grids are left alone): the ops fit
  // them before each step's update, so the last update needs this.
  void refresh_weights() {
    if (lsq_) return;
    for (auto& w : weights_) store(choose_weight_params(w.weight, w.spec), w.scale, w.zero_point);
  }

 private:
  struct WeightGrid {
    Tensor weight, scale, zero_point;  // share storage with the model's initializers
    QuantSpec spec;
  };
  bool lsq_;
  std::vector<WeightGrid> weights_;
  std::vector<Tensor> activation_scales_;
  std::set<std::string> scale_names_;
};

}  // namespace

bool is_qat_model(const Graph& model) { return std::any_of(model.nodes.begin(), model.nodes.end(), is_fake_quant); }

namespace {
bool is_layer(const Node& node) { return traits_of(node).has_weights(); }
bool passes_integers(const Node& node) { return traits_of(node).passes_quantized; }

// The value whose grid a quantized layer's input uses in the integer model: through max-pooling,
// reshapes and flattens (which pass s8 values unchanged) back to a quantized layer's output, whose
// requantization produces the codes; otherwise the input itself (a QuantizeLinear goes there).
std::string grid_value(const Graph& g, const std::string& input, const QuantPlan& plan) {
  std::string v = input;
  for (;;) {
    const int p = g.producer(v);
    if (p < 0) return input;
    const Node& node = g.nodes[p];
    if (is_layer(node) && plan.rule_for(node.name).quantize) return v;
    if (!passes_integers(node)) return input;
    v = node.inputs.at(0);
  }
}
}  // namespace

Graph prepare_qat(const Graph& original, const QatOptions& options, const Calibration& ranges) {
  if (is_quantized(original)) throw Error(ErrorKind::InvalidArgument, "the model is already quantized (QAT starts from a float model)");
  if (is_qat_model(original)) throw Error(ErrorKind::InvalidArgument, "the model already has fake quantization (it was prepared for QAT)");
  if (options.activation_bits != 8)
    throw Error(ErrorKind::InvalidArgument, "activation bits must be 8 (the integer runtime computes with 8-bit activations), got " +
                                                std::to_string(options.activation_bits));
  if (options.plan.mode == QuantMode::Dynamic)
    throw Error(ErrorKind::InvalidArgument, "dynamic quantization has no activation grid to train; use mode full or partial");
  check_plan_layers(original, options.plan);
  // BatchNorm folded and ReLUs fused as the quantization engine will: QAT trains those layers.
  const Graph model = prepare_for_quantization(original);

  Graph g;
  g.name = model.name;
  g.inputs = model.inputs;
  g.outputs = model.outputs;
  g.metadata = model.metadata;
  for (const auto& [name, t] : model.initializers) g.initializers[name] = t.clone();  // `original` stays as it is
  // Activation grids: value -> its fake-quantized value. A grid on a layer's output is inserted right
  // after that layer and every reader of the value reads the fake-quantized one (as in the integer
  // model, where float readers get the dequantized codes).
  std::map<std::string, std::string> fake_quantized;
  std::set<std::string> grids;
  for (const auto& node : model.nodes)
    if (is_layer(node) && options.plan.rule_for(node.name).quantize) grids.insert(grid_value(model, node.inputs.at(0), options.plan));
  // Values computed from the model's input alone (the input, a flattened input) keep their
  // calibrated grid under LSQ (with min-max observers they are observed like any activation): the
  // data's range is known, and a learned step there would cost the first layer's input gradient,
  // the largest product of the backward pass, which nothing else needs.
  std::set<std::string> data_only;
  for (const auto& in : model.inputs) data_only.insert(in.name);
  for (const auto& node : model.nodes)
    if (std::all_of(node.inputs.begin(), node.inputs.end(), [&](const std::string& v) { return data_only.count(v) > 0; }))
      data_only.insert(node.outputs.begin(), node.outputs.end());
  auto add_activation_grid = [&](const std::string& value) {
    auto r = ranges.ranges.find(value);
    if (r == ranges.ranges.end())
      throw Error(ErrorKind::InvalidArgument, "the calibration ranges have no entry for value '" + value +
                                                  "' (were they computed for this model?)");
    const bool learned = options.lsq && !data_only.count(value);
    Node fq = fake_quant_node(value + ".fq", value, choose_params(r->second.min, r->second.max, kActivationSpec), learned, g);
    fq.attributes["role"] = "activation";
    fake_quantized[value] = fq.outputs[0];
    g.add_node(std::move(fq));
  };
  for (const auto& in : model.inputs)
    if (grids.count(in.name)) add_activation_grid(in.name);
  for (const auto& node : model.nodes) {
    Node n = node;
    for (auto& in : n.inputs)
      if (fake_quantized.count(in)) in = fake_quantized[in];
    const LayerRule rule = options.plan.rule_for(node.name);
    if (is_layer(node) && rule.quantize) {
      if (rule.weight_bits < 2 || rule.weight_bits > 8)
        throw Error(ErrorKind::InvalidArgument, "layer '" + node.name + "': weight bits must be 2..8");
      const Tensor& weight = model.initializers.at(node.inputs.at(1));
      const QuantSpec spec = weight_spec(rule);
      const QuantParams wp = options.lsq ? lsq_initial_weight_params(weight, spec) : choose_weight_params(weight, spec);
      Node fq = fake_quant_node(node.name + ".weight_fq", node.inputs[1], wp, options.lsq, g);
      fq.attributes["role"] = "weight";
      fq.attributes["layer"] = node.name;
      n.inputs[1] = fq.outputs[0];
      g.add_node(std::move(fq));
    }
    g.add_node(std::move(n));
    for (const auto& out : node.outputs)
      if (grids.count(out)) add_activation_grid(out);
  }
  nlohmann::json info = {{"lsq", options.lsq}, {"activation_bits", options.activation_bits}, {"plan", nlohmann::json::parse(options.plan.to_json())}};
  g.metadata["qat"] = info.dump();
  g.validate();
  return g;
}

TrainReport train_qat(Graph& model, const Dataset& data, const TrainOptions& options, const QatOptions& qat) {
  if (!is_qat_model(model)) throw Error(ErrorKind::InvalidArgument, "the model has no fake quantization (call prepare_qat first)");
  if (options.hooks) throw Error(ErrorKind::InvalidArgument, "train_qat installs its own training hooks");
  const int64_t samples = data.size() - static_cast<int64_t>(std::floor(data.size() * options.validation_split));
  const int64_t steps = options.epochs * ((samples + options.batch_size - 1) / std::max(1, options.batch_size));
  if (!qat.lsq) arm_observers(model, qat, qat.observer_steps >= 0 ? qat.observer_steps : steps / 2);
  Observers observers(model, qat);
  TrainOptions o = options;
  o.hooks = &observers;
  TrainReport report = train(model, data, o);
  observers.refresh_weights();  // the grids of the final weights
  return report;
}

QatParameters qat_parameters(const Graph& model) {
  if (!is_qat_model(model)) throw Error(ErrorKind::InvalidArgument, "the model has no fake quantization (not a QAT model)");
  QatParameters result;
  Graph& g = result.float_model;
  g.name = model.name;
  g.inputs = model.inputs;
  g.outputs = model.outputs;
  g.metadata = model.metadata;
  g.metadata.erase("qat");
  std::map<std::string, std::string> source;  // fake-quantized value -> the value under it
  std::map<std::string, LayerRule> rules;
  for (const auto& node : model.nodes) {
    if (!is_fake_quant(node)) continue;
    source[node.outputs[0]] = node.inputs[0];
    const QuantParams p = params_of(model, node);
    if (node.attr_string("role", "") == "weight") {
      const std::string layer = node.attr_string("layer", "");
      result.fixed.weights[layer] = p;
      rules[layer] = {true, p.bits, p.per_channel(), p.scheme, "minmax"};
    } else {
      if (p.bits != 8 || p.per_channel())
        throw Error(ErrorKind::Format, "fake-quantization node '" + node.name + "': activations must be 8-bit per tensor");
      result.fixed.activations[node.inputs[0]] = p;
    }
  }
  for (const auto& node : model.nodes) {
    if (is_fake_quant(node)) continue;
    Node n = node;
    for (auto& in : n.inputs) {
      if (source.count(in)) in = source[in];
      auto it = model.initializers.find(in);
      if (it != model.initializers.end()) g.initializers[in] = it->second;
    }
    g.add_node(std::move(n));
  }
  g.validate();
  // QAT trains the layers with weights; attention (no weights, no fake quantization) stays float.
  size_t weight_layers = 0;
  for (const auto& node : g.nodes) weight_layers += traits_of(node).has_weights();
  result.plan.mode = rules.size() == weight_layers ? QuantMode::Full : QuantMode::Partial;
  if (!rules.empty()) result.plan.defaults = rules.begin()->second;
  for (const auto& node : g.nodes)
    if (traits_of(node).is_quantizable() && !traits_of(node).has_weights()) rules[node.name] = LayerRule{.quantize = false};
  result.plan.layers = rules;
  for (const auto& node : g.nodes)
    if (rules.count(node.name) && rules.at(node.name).quantize && !result.fixed.activations.count(grid_value(g, node.inputs.at(0), result.plan)))
      throw Error(ErrorKind::Format, "layer '" + node.name + "' has fake-quantized weights but no fake-quantized input");
  return result;
}

Graph convert_qat(const Graph& model) {
  QatParameters p = qat_parameters(model);
  return quantize_model(p.float_model, p.plan, {}, p.fixed);
}

}  // namespace lowbit
