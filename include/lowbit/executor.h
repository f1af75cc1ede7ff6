// lowbit/executor.h - runs a Graph forward, and backward for training.
//
// The Executor plans a validated graph once (value slots, op lookups, which values need
// gradients) and then runs it many times. It keeps its own copy of the graph's nodes, so the
// caller's graph may change or go away; the initializers' storage is shared with the caller's
// graph (tensors share buffers), so an optimizer updating them through parameters() updates the
// model.
//
//   lowbit::Executor run(graph);
//   run.input("image") = batch;              // a Tensor of the declared dtype, any batch size
//   run.forward();
//   const lowbit::Tensor& probs = run.value("probabilities");
//   // training: seed d(loss)/d(loss) = 1 and propagate back to every float initializer
//   run.backward("loss");
//   for (auto& p : run.parameters()) { /* p.value, *p.grad */ }
//
// Gradients of a value read by several nodes (or twice by one node, as Add(x, x)) are summed.
//
// Threads. A Graph (a loaded model) is read-only to executors: any number of threads may plan
// executors of one model at once. One inference executor serves any number of threads through
// run(), which keeps each call's values and scratch memory to itself (its plan and packed weights
// are shared); forward(), input() and value() use the executor's own slots and scratch (one
// Workspace lent to each node in turn), so they are for one thread at a time. Training state (the
// values of a step, gradients, the optimizer) belongs to one executor on one thread; training
// updates the model's weights in place, so no other thread may run that model meanwhile.
// tests/runtime/test_concurrent.cpp checks these rules under ThreadSanitizer.
//
// A training executor runs every node through Op::forward_train with its RunContext: BatchNorm
// normalizes with batch statistics and updates its running statistics in the graph, Dropout draws
// a mask from (seed, step, node name). The step counts forward() calls from 0; set_seed() (the
// trainer passes TrainOptions::seed) makes the masks of one run reproducible. A non-training
// executor runs the inference forward (running statistics, no dropout).
#pragma once

#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "lowbit/graph.h"
#include "lowbit/ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit {

struct Parameter {
  std::string name;
  Tensor value;  // shares storage with the graph's initializer
  Tensor* grad;  // owned by the executor, valid after backward()
  float learning_rate_scale = 1.0f;  // the optimizers multiply their learning rate by this
};

class Executor {
 public:
  // With training = true, every f32 initializer that a node differentiates is a parameter that
  // receives a gradient. `settings` (threads, ISA cap) apply to this executor only: to its
  // planning (which implementation each node gets) and to every forward() and backward().
  explicit Executor(const Graph& graph, bool training = false, RunSettings settings = {});
  // Bytes of scratch memory the executor holds for its nodes (workspace.h): the largest need of
  // any node so far. Runs after the first one on the same shapes allocate no scratch.
  size_t workspace_bytes() const { return workspace_.capacity(); }
  Executor(const Executor&) = delete;  // parameters() points into this object
  Executor& operator=(const Executor&) = delete;

  Tensor& input(const std::string& name);
  void forward();
  const Tensor& value(const std::string& name) const;
  // Training executors: the seed of random ops (default 0) and the step of the next forward().
  void set_seed(uint64_t seed) { context_.seed = seed; }
  void set_step(int64_t step) { context_.step = step; }
  const RunContext& context() const { return context_; }
  // Inference from several threads at once. run() keeps the values of each call to itself, so one
  // executor (its plan, its packed weights) serves any number of threads; it feeds `inputs` (by
  // the graph's input names; the caller's tensors are read, not copied) and returns the graph's
  // outputs in order. forward(), input() and value() are for one thread at a time. Training
  // executors refuse (Error(InvalidArgument)): training state belongs to one executor and thread.
  std::vector<Tensor> run(const std::map<std::string, Tensor>& inputs) const;
  // Back-propagates from the scalar `loss` value (computed by the last forward()): the gradients
  // of loss_scale * loss. With `after_step`, it is called after every backward step with the
  // indices (into parameters()) of the parameters whose gradients that step completed (often
  // none): a data-parallel trainer starts sending gradients while the rest of the backward runs.
  // A parameter's gradient tensor may be pointed at memory of the caller's (Tensor::wrap, same
  // shape) before backward(): the gradient is written there, unless an op hands over a tensor of
  // its own instead (FakeQuantize passes its output's gradient through): compare grad->raw().
  using GradientsReady = std::function<void(std::span<const size_t>)>;
  void backward(const std::string& loss, const GradientsReady& after_step = nullptr, float loss_scale = 1.0f);
  std::vector<Parameter>& parameters() { return parameters_; }
  // The parameters in the order backward() completes their gradients (the same for every run).
  const std::vector<size_t>& gradient_order() const { return gradient_order_; }

  // Profiling (as ONNX Runtime's enable_profiling): while on, forward() adds each node's wall time
  // to its entry; node_times() lists the nodes in run order with their total seconds and the
  // number of forward() calls that ran them. Turning it on clears the totals.
  struct NodeTime {
    std::string name, op;
    double seconds = 0;
    int64_t runs = 0;
  };
  void set_profiling(bool on);
  const std::vector<NodeTime>& node_times() const { return node_times_; }

 private:
  struct Step {
    const Node* node;
    const Op* op;
    std::vector<int> inputs, outputs;
    bool run_backward = false;
    std::shared_ptr<const OpState> state;  // from Op::prepare
  };
  int id_of(const std::string& name) const;
  // Every step over `values` with `workspace`: forward() passes the executor's own (and its node
  // times while profiling), run() a call's.
  void run_steps(std::vector<Tensor>& values, Workspace& workspace, std::vector<NodeTime>* times) const;

  const Graph graph_;  // its own copy (initializers share storage with the caller's graph)
  std::map<std::string, int> ids_;
  std::vector<Tensor> values_, grads_;
  std::vector<bool> needs_grad_;
  std::vector<int> consumers_;  // how many backward steps contribute to each value's gradient
  std::vector<Step> steps_;
  std::vector<Parameter> parameters_;
  std::vector<int> parameter_of_;  // value id -> index in parameters_, or -1
  std::vector<size_t> gradient_order_;
  std::vector<Tensor> scratch_;  // one per input slot that adds to an already written gradient
  std::vector<int> constant_ids_;  // initializers and folded constants: what run() shares between calls
  RunContext context_;
  RunSettings settings_;
  Workspace workspace_;  // scratch memory lent to one node at a time
  bool profiling_ = false;
  std::vector<NodeTime> node_times_;  // one per step while profiling
};

}  // namespace lowbit
