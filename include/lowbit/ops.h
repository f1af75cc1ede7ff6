// lowbit/ops.h - the op registry: what each node type computes, forward and backward.
//
// An Op is stateless: everything it needs comes from the Node (attributes) and the tensors passed
// in. Ops are looked up by type name; built-in ops are registered on first use.
//
//   const lowbit::Op& dense = lowbit::find_op("Dense");
//   std::vector<lowbit::Shape> shapes = {{-1, 784}, {64, 784}, {64}};
//   auto out_shapes = dense.infer_shapes(node, shapes);   // {[N, 64]}
//   dense.forward(node, inputs, outputs);
//
// Contract for an implementation (every op must also pass the finite-difference gradient check in
// tests/graph/test_gradcheck.cpp):
//   infer_shapes: given input shapes (-1: a dimension known only at run time), returns output shapes, or throws
//                 Error(Format) naming node.name and the offending input.
//   forward:      resizes each output (Tensor::resize) and fills it. Inputs are not modified.
//   backward:     given inputs, outputs and the gradients of the outputs, writes (overwrites) the
//                 gradient of every input whose slot in input_grads is not null. It is only called
//                 after a training-mode forward (forward_train), so ops whose forward depends on the
//                 mode differentiate the training-mode forward.
//   forward_train: the forward pass of a training executor (see RunContext). Only ops whose
//                 training forward differs (BatchNormalization, Dropout) override it; they may
//                 update their *state inputs* in place (BatchNormalization's running statistics,
//                 which are initializers shared with the graph, so the model sees the update).
// traits:        what the op *is* for the graph passes (quantize, fold, fuse, QAT, the trainer): each
//                op states them in its own definition; no pass keeps a list of op names.
// Built-in ops: Dense, MatMul, Relu, Gelu, Softmax, Add, Sub, Mul, Div, Cast, Constant, ReduceSum,
// ReduceMean, ReduceMax, ReduceMin, Flatten, Reshape, Sigmoid, Tanh, LeakyRelu, Clip, LogSoftmax,
// Transpose, Concat, Squeeze, Unsqueeze, Slice, Gather, Shape, Identity (ONNX semantics, for imported models),
// Conv2D, MaxPool2D, AveragePool2D, GlobalAveragePool, BatchNormalization, Dropout,
// SoftmaxCrossEntropy, DistillationLoss, the training-time FakeQuantize and LsqFakeQuantize, and
// the quantized ops QuantizeLinear, DequantizeLinear, QDense, DynamicQDense, QConv2D and
// DynamicQConv2D (see docs/ops.md).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/graph.h"
#include "lowbit/tensor.h"
#include "lowbit/workspace.h"

namespace lowbit {

// What a training-mode forward pass may depend on besides its inputs: the step (how many forward
// passes the executor ran before this one, counting from 0) and a seed, so random ops (Dropout)
// draw a different but reproducible mask every step: same seed, same steps -> same bytes, for any
// thread count. A training Executor owns one and advances `step` on every forward().
struct RunContext {
  bool training = false;
  uint64_t seed = 0;
  int64_t step = 0;
};

// What an op is, for the graph passes. Set once by each op's constructor; the passes ask
// `traits_of(node)` instead of comparing op names.
struct OpTraits {
  int version = 1;   // the op's version: bumped when its attributes or meaning change
  std::string onnx = "";  // the ONNX op it corresponds to ("" when there is none)
  // Float layers that post-training quantization and QAT turn into integer layers, and how: the
  // weights are a matrix [out, in] (Dense) or a convolution kernel [out, in/group, kh, kw]; or the
  // layer has no weights and every operand is an activation (Attention: static quantization gives
  // it calibrated grids for its inputs; dynamic, block-weight and QAT rules leave it float).
  enum class Quantizable { No, MatrixWeights, ConvWeights, Activations };
  Quantizable quantizable = Quantizable::No;
  std::string quantized_op = "";  // its static integer counterpart (Dense -> QDense)
  std::string dynamic_op = "";    // its dynamic counterpart (Dense -> DynamicQDense)
  std::string block_op = "";      // its counterpart with block weights (Dense -> BlockQDense)
  // Integer layers: the float op they replace (dequantization maps them back); dynamic layers
  // take and produce f32 and quantize their input at run time.
  std::string float_op = "";
  bool dynamic = false;
  // Weights in blocks along K with a scale each (BlockQDense, kernels/blockq.h): f32 in and out.
  bool block_weights = false;
  // Where values change representation: QuantizeLinear (f32 -> s8), DequantizeLinear (s8 -> f32).
  enum class Boundary { None, Quantize, Dequantize };
  Boundary boundary = Boundary::None;
  // Passes quantized (s8) values through unchanged, so an integer layer may consume its output
  // (max-pooling, reshapes).
  bool passes_quantized = false;
  // Only moves or relabels values (Flatten, Reshape): its output holds its input's numbers.
  bool layout_only = false;
  // An activation that a preceding layer with an "activation" attribute can absorb, by that
  // attribute's value (Relu -> "relu"); `fuses_activation`: the layer that absorbs it.
  std::string fusable_as = "";
  bool fuses_activation = false;
  // BatchNormalization: folds into the weights of a preceding layer with `absorbs_batchnorm`
  // (weights one row per output channel, a bias per channel, no fused activation).
  bool folds_into_layer = false;
  bool absorbs_batchnorm = false;
  // Training-time fake quantization (QAT).
  bool fake_quantize = false;
  bool learns_scale = false;  // LSQ: the grid's scale is a trained parameter, not observed
  // Softmax over logits: the trainer replaces it by a loss on its input (the logits).
  bool probabilities_of_logits = false;

  bool is_quantizable() const { return quantizable != Quantizable::No; }
  bool has_weights() const { return quantizable == Quantizable::MatrixWeights || quantizable == Quantizable::ConvWeights; }
  bool is_integer_layer() const { return !float_op.empty(); }
};

// Per-node state built once by Op::prepare (packed weights, requantization constants, the
// implementation chosen); each op derives its own and reads it back with state_as<T>.
struct OpState {
  virtual ~OpState() = default;
};
template <typename T>
const T& state_as(const OpState* state) {
  return static_cast<const T&>(*state);
}

class Op {
 public:
  virtual ~Op() = default;
  const OpTraits& traits() const { return traits_; }
  virtual std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> inputs) const = 0;
  virtual void forward(const Node& node, std::span<const Tensor* const> inputs,
                       std::span<Tensor* const> outputs) const = 0;
  virtual void backward(const Node& node, std::span<const Tensor* const> inputs,
                        std::span<const Tensor* const> outputs, std::span<const Tensor* const> output_grads,
                        std::span<Tensor* const> input_grads) const = 0;
  // False for inputs that are never differentiable (e.g. integer labels).
  virtual bool differentiable_input(int /*index*/) const { return true; }
  // Output dtypes from input dtypes; by default every output is f32.
  virtual std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> inputs) const;

  // Optional two-phase lifecycle (create once, run many times): prepare() validates the node and
  // builds per-node state from its constant inputs (initializers; null for run-time inputs), e.g.
  // packed weights and requantization multipliers, as a type derived from OpState. The executor
  // calls it once and passes the state to forward_prepared(), with the executor's Workspace for
  // the call's scratch memory (workspace.h). Ops without state use the defaults.
  virtual std::shared_ptr<const OpState> prepare(const Node& /*node*/, std::span<const Tensor* const> /*constants*/) const {
    return nullptr;
  }
  virtual void forward_prepared(const Node& node, const OpState* /*state*/, std::span<const Tensor* const> inputs,
                                std::span<Tensor* const> outputs, Workspace& /*workspace*/) const {
    forward(node, inputs, outputs);
  }
  // The forward pass of a training executor (context.training is true there). Inputs are mutable
  // so that an op can update its state inputs (running statistics) in place; every other input
  // must be left as it is. `state` is prepare()'s, as for forward_prepared, to which the default
  // forwards: ops that behave the same in training need not override this.
  virtual void forward_train(const Node& node, const OpState* state, const RunContext& /*context*/,
                             std::span<Tensor* const> inputs, std::span<Tensor* const> outputs, Workspace& workspace) const {
    forward_prepared(node, state, std::span<const Tensor* const>(inputs.data(), inputs.size()), outputs, workspace);
  }
  // Which implementation computes this node (with prepare()'s state) and why the faster ones
  // declined, in one line, e.g. "qconv_direct_s8__avx2 (declined: qconv_direct_s8__avx512vnni:
  // the CPU lacks AVX-512 VNNI)". Executors print it under LOWBIT_VERBOSE=1. The default is for
  // ops with one implementation.
  virtual std::string describe(const Node& /*node*/, const OpState* /*state*/) const { return "portable loops (one implementation)"; }
  // Rewrites a node written for an older version of this op (`from_version` < traits().version)
  // into the current form, as ONNX version converters do, adding to `graph` the initializers the
  // new form needs (e.g. parameters that were attributes); the model loader calls it, before the
  // file's tensors are read, so that old files keep loading. The default refuses: an op that
  // bumps its version overrides this.
  virtual void upgrade(Node& node, int from_version, Graph& graph) const;
  // The backward pass with prepare()'s state and the executor's workspace (the executor calls this
  // one); the default forwards to backward(), so only ops that read their state or need scratch
  // memory when differentiating override it.
  virtual void backward_prepared(const Node& node, const OpState* /*state*/, std::span<const Tensor* const> inputs,
                                 std::span<const Tensor* const> outputs, std::span<const Tensor* const> output_grads,
                                 std::span<Tensor* const> input_grads, Workspace& /*workspace*/) const {
    backward(node, inputs, outputs, output_grads, input_grads);
  }

 protected:
  OpTraits traits_;  // set by the op's constructor
};

// Throws Error(Format) for an unknown type, listing the known ones.
const Op& find_op(const std::string& type);
bool has_op(const std::string& type);
// The traits of a node's op (throws like find_op for an unknown type).
const OpTraits& traits_of(const Node& node);
void register_op(const std::string& type, std::unique_ptr<Op> op);
std::vector<std::string> registered_ops();

}  // namespace lowbit
