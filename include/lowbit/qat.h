// lowbit/qat.h - quantization-aware training: train with the quantizer in the loop, then convert.
//
// prepare_qat inserts fake-quantization nodes (quantize then dequantize, the same parameters and
// rounding as the integer runtime) on the weights of the chosen Dense and Conv2D layers and on their input
// activations. Training such a graph (train_qat) lets the float weights adapt to the grid:
// gradients pass the rounding straight through (STE) and stop where a value is clipped. Weight
// grids follow the weights (per-channel min-max, recomputed every step); activation grids come from
// moving-average min-max observers that freeze after a number of steps. With `lsq` the step sizes
// (scales) are learned instead, by LSQ's gradient (Esser et al. 2019, "Learned Step Size
// Quantization"). convert_qat then gives the integer model of the quantization engine with exactly
// the trained parameters, so the two agree (docs/qat.md states the bound).
//
//   lowbit::Graph model = lowbit::load_model("mlp.lbm");          // a trained float model
//   lowbit::QatOptions qat;
//   qat.plan.defaults.weight_bits = 4;
//   lowbit::Graph fq = lowbit::prepare_qat(model, qat, lowbit::calibrate(model, data.train, {}));
//   lowbit::TrainOptions options;
//   options.epochs = 3;
//   lowbit::train_qat(fq, data.train, options, qat);                // fine-tunes the float weights
//   lowbit::Graph q = lowbit::convert_qat(fq);                      // integer-only QDense layers
//
// A fake-quantized model is an ordinary graph: it saves, loads, evaluates and trains like any other.
#pragma once

#include <string>

#include "lowbit/calibration.h"
#include "lowbit/graph.h"
#include "lowbit/quantize.h"
#include "lowbit/train.h"

namespace lowbit {

struct QatOptions {
  // Which Dense / Conv2D layers, how many weight bits, which granularity and scheme. Mode full quantizes every
  // such layer; partial only the listed ones. Dynamic mode is not a QAT target.
  QuantPlan plan;
  int activation_bits = 8;            // the integer runtime computes with 8-bit activations
  bool lsq = false;                   // learn the scales (weights and activations)
  int64_t observer_steps = -1;        // activation observers update this many steps, then freeze;
                                      // -1: the first half of training
  float observer_averaging = 0.01f;   // moving-average factor of the activation observers
};

// A copy of the float model (its own weights) with fake quantization inserted. Activation grids start from `ranges` (a
// calibration of the float model). Throws Error(InvalidArgument) for a quantized or already
// prepared model, or a plan naming unknown layers.
Graph prepare_qat(const Graph& model, const QatOptions& options, const Calibration& ranges);
bool is_qat_model(const Graph& model);

// Trains a prepared model (train() with the observers and scale updates hooked in); at the end the
// weight grids are recomputed from the final weights, so evaluating `model` afterwards gives what
// convert_qat's integer model computes.
TrainReport train_qat(Graph& model, const Dataset& data, const TrainOptions& options, const QatOptions& qat);

// The integer model (QDense / QConv2D layers, packed weights) with the fake-quantized model's parameters.
Graph convert_qat(const Graph& model);
// The plan and the fixed parameters convert_qat uses, and the float model under the fake quantizers.
struct QatParameters {
  Graph float_model;
  QuantPlan plan;
  FixedQuantParams fixed;
};
QatParameters qat_parameters(const Graph& model);

}  // namespace lowbit
