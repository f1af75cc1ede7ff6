// lowbit/quantize.h - post-training quantization as a transform on the graph, and its inverse.
//
// quantize_model takes a float graph and a plan (which layers, how many bits, which granularity,
// which calibration) and returns a graph whose chosen Dense layers are integer QDense nodes (full
// and partial modes) or DynamicQDense nodes (dynamic mode), with packed weights and the
// QuantizeLinear / DequantizeLinear nodes needed at the float/integer boundaries. The result is an
// ordinary model: it saves, loads, runs and evaluates like any other. dequantize_model is the
// inverse: a float graph with the same node names whose weights are the quantized values.
//
//   lowbit::Calibration ranges = lowbit::calibrate(model, data.train, {});
//   lowbit::QuantPlan plan;                          // full int8, per-channel symmetric weights
//   plan.defaults.weight_bits = 4;                   // 4-bit weights, 8-bit activations
//   lowbit::Graph q = lowbit::quantize_model(model, plan, {{ranges.method, ranges}});
//   lowbit::Graph back = lowbit::dequantize_model(q);
//
// Plans are JSON files (docs/quantization.md shows the schema) that a person can read and edit.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/calibration.h"
#include "lowbit/graph.h"
#include "lowbit/quant_params.h"

namespace lowbit {

enum class QuantMode { Full, Partial, Dynamic };
const char* name_of(QuantMode mode) noexcept;
QuantMode quant_mode_from_name(const std::string& name);

struct LayerRule {
  bool quantize = true;
  int weight_bits = 8;                          // 8, 6, 4, 3 or 2
  bool per_channel = true;                      // one weight scale per output channel
  QScheme weight_scheme = QScheme::Symmetric;
  std::string calibration = "minmax";           // method whose ranges this layer's activations use
  // How weights round onto their grid: "nearest", or "gptq" (error feedback through the layer's
  // input Hessian, which quantize() computes on its calibration data: Dense layers, and Conv2D
  // layers of one group through their input patches; grouped convolutions round to nearest).
  std::string rounding = "nearest";
  // With "gptq": round the columns by decreasing Hessian diagonal (GptqOptions::act_order).
  bool act_order = false;
  // Block (group) weights: 0 for whole rows (per_channel / per_tensor); 32, 64 or 128 cuts each
  // row of a Dense layer into blocks of that many inputs, each with an fp16 scale (and, affine, a
  // zero point): BlockQDense layers (kernels/blockq.h; 2, 3 or 4 bits), which take and give f32
  // in every mode and quantize their input per block at run time.
  int group_size = 0;
};

struct QuantPlan {
  QuantMode mode = QuantMode::Full;
  LayerRule defaults;                            // for layers not listed
  std::map<std::string, LayerRule> layers;       // per-layer rules, by node name
  std::string dynamic_granularity = "row";      // dynamic mode: activation range per "row" or "tensor"
  // s8 activation grids: Affine (a zero point; the full 8 bits for post-ReLU values) or Symmetric
  // (zero point 0, as TensorRT requires; exported exactly by `lowbit export --symmetric`).
  QScheme activation_scheme = QScheme::Affine;

  // The rule for `layer`. In Partial mode a layer not listed stays float.
  LayerRule rule_for(const std::string& layer) const;
  // The plan as JSON text (the schema of plan files, compact), and back. `source` names the origin
  // in error messages; unknown fields and bad values are errors.
  std::string to_json() const;
  static QuantPlan from_json(const std::string& text, const std::string& source);
};
void save_plan(const QuantPlan& plan, const std::string& path);
QuantPlan load_plan(const std::string& path);

// Layers quantize_model can quantize (Dense, Conv2D and Attention nodes), in graph order.
std::vector<std::string> quantizable_layers(const Graph& model);
// Whether quantize_model makes `node` an integer layer under `plan`: its rule says quantize and,
// for a layer without weights (Attention), the plan is static (full or partial) and the rule has
// no block weights (weight-only rules leave activations float).
bool quantizes(const Node& node, const QuantPlan& plan);
// Error(InvalidArgument) naming the first layer `plan` lists that `model` lacks as a Dense or
// Conv2D layer (quantize_model and prepare_qat check it; callers can check before loading data).
void check_plan_layers(const Graph& model, const QuantPlan& plan);
// Names of `layers` matching a comma-separated list of names or glob patterns ("dense_*").
// Throws Error(InvalidArgument) for a pattern that matches nothing.
std::vector<std::string> select_layers(const Graph& model, const std::string& patterns);

// Parameters decided in advance (quantization-aware training learned them, see qat.h): weight
// parameters by layer name, activation parameters (8-bit affine, per tensor) by value name. They
// take precedence over the plan's weight rule and over the calibration ranges.
struct FixedQuantParams {
  std::map<std::string, QuantParams> weights, activations;
  // Weight codes decided in advance ([units, features] of the layer's `weights` parameters, e.g.
  // GPTQ's), by layer name: used as they are instead of rounding the weights.
  std::map<std::string, std::vector<int32_t>> weight_codes;
};

// `ranges` maps a calibration method name to its calibration (full and partial modes need the
// methods the plan uses, except for values in `fixed`; dynamic mode needs none).
Graph quantize_model(const Graph& model, const QuantPlan& plan, const std::map<std::string, Calibration>& ranges,
                     const FixedQuantParams& fixed = {});
Graph dequantize_model(const Graph& quantized);

// Folds every inference-mode BatchNormalization that directly follows a Conv2D or Dense layer
// (no fused activation, the layer's output used only by the normalization, constant statistics)
// into that layer: per output channel c, with a = scale[c] / sqrt(var[c] + epsilon),
//   w'[c, ...] = w[c, ...] * a,   b'[c] = (b[c] - mean[c]) * a + B[c]
// (computed in double, a bias created when the layer had none). The layer takes over the
// normalization's output value name; the result computes the same function up to float rounding.
// quantize_model calls it first.
Graph fold_batchnorm(const Graph& model);
// What quantize_model quantizes: fold_batchnorm, then every Conv2D whose output only a Relu reads
// gets that ReLU fused (taking over the Relu's output value). The same float function.
// Quantization-aware training starts from this graph too, so both see the same layers.
Graph prepare_for_quantization(const Graph& model);
bool is_quantized(const Graph& model);

// ---- GPTQ (Frantar et al. 2022): rounding that feeds the error back ---------------------------
struct GptqOptions {
  double damp = 0.01;      // added to the Hessian's diagonal, as a fraction of its mean
  bool act_order = false;  // round the columns by decreasing Hessian diagonal (inputs with the most
                           // energy first), not left to right; block grids stay the storage's blocks
  int64_t batch = 128;     // lazy batches of columns (0: all at once); the codes do not depend on it
};
// Codes of `weight` [units, features] on the grid `params` (per tensor or per output channel, as
// choose_weight_params gives them; or per block, choose_block_weight_params, whose scales and zero
// points are refitted here, each when its block is reached, to the weights as updated by then),
// chosen column by column: a column is rounded to nearest and
// its rounding error, weighted through the inverse of `hessian` ([features, features], the sum of
// x x^T over the layer's calibration inputs x), is pushed onto the columns not rounded yet. The
// layer's output error on those inputs is then (in practice always) below round-to-nearest's.
// Deterministic (double precision, fixed order; the same codes for any thread count and batch).
// With act_order a block's grid is fitted when the first of its columns comes up, to the block's
// weights as updated by then. docs/design.md derives the update.
std::vector<int32_t> gptq_codes(const Tensor& weight, const Tensor& hessian, QuantParams& params,
                                const GptqOptions& options = {});
// The sum of x x^T over the inputs x of each layer in `layers`, running the float `model` on the
// first `samples` samples of `data`, f32 [features, features]: for a Dense layer its input rows,
// for a Conv2D layer (one group) its input patches in the weight's [channels, kh, kw] order, one
// per image and output position (zeros where the window reads padding).
std::map<std::string, Tensor> layer_hessians(const Graph& model, const Dataset& data, const std::vector<std::string>& layers,
                                             int64_t samples, int batch_size = 256);
// The GPTQ codes (FixedQuantParams::weight_codes and their weights' parameters) of the Dense and
// (one-group) Conv2D layers that `plan` quantizes with rounding "gptq", from Hessians on the first `samples` samples of
// `data`, for quantize_model(model, plan, ranges, fixed). Empty when no layer asks for GPTQ.
FixedQuantParams gptq_weights(const Graph& model, const QuantPlan& plan, const Dataset& data, int64_t samples);
// Whether `rule` rounds `node` (of prepare_for_quantization's graph) with GPTQ: Dense and one-group
// Conv2D layers whose rule says "gptq".
bool gptq_rounds(const Node& node, const LayerRule& rule);
// One layer's GPTQ codes and grid, from its Hessian (layer_hessians on the prepared graph), into
// `fixed` (what gptq_weights does for each layer; the plan search calls it per candidate rule).
void gptq_layer(const Graph& prepared, const Node& node, const LayerRule& rule, const Tensor& hessian, FixedQuantParams& fixed);
bool plan_uses_gptq(const QuantPlan& plan);

// SmoothQuant (Xiao et al. 2022): activation outliers moved into the weights before static
// quantization. For each LayerNormalization (last axis, constant scale and bias) that Dense layers
// read, channel j of what those layers read is divided by
//   s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha)
// (max|x_j| over the first `samples` samples of `data`, max|W_:,j| over every Dense reading it) and
// column j of their weights multiplied by it: the float function is unchanged (to rounding), the
// quantized activations flatter and the weights steeper. When only Dense layers read the LayerNorm
// (pre-norm transformers) 1 / s goes into its scale and bias, for free; otherwise (post-norm, e.g.
// BERT, whose LayerNorm output is also the residual stream) a Mul node `<norm>.smooth` by 1 / s
// feeds the Dense layers. alpha in [0, 1]; s_j = 1 where either maximum is 0. Returns the smoothed
// graph (the input is not modified) and, in `smoothed`, the LayerNorm nodes it acted on.
struct SmoothOptions {
  double alpha = 0.5;
  int64_t samples = 512;
  int batch_size = 64;
};
Graph smooth_activations(const Graph& model, const Dataset& data, const SmoothOptions& options,
                         std::vector<std::string>* smoothed = nullptr);

}  // namespace lowbit
