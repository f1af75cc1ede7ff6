#include "lowbit/executor.h"

#include "lowbit/runtime_config.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

namespace lowbit {

Executor::Executor(const Graph& graph, bool training, RunSettings settings) : graph_(graph), settings_(settings) {
  ScopedRunSettings scope(settings_);
  context_.training = training;
  auto add_value = [&](const std::string& name) {
    auto [it, inserted] = ids_.emplace(name, static_cast<int>(values_.size()));
    if (inserted) {
      values_.emplace_back();
      needs_grad_.push_back(false);
    }
    return it->second;
  };
  for (const auto& in : graph_.inputs) values_[add_value(in.name)] = Tensor(in.dtype, {0});
  for (const auto& [name, tensor] : graph_.initializers) {
    int id = add_value(name);
    values_[id] = tensor;  // shared storage
    if (training && tensor.dtype() == DType::F32) needs_grad_[id] = true;
  }
  // Outputs of nodes without inputs (Constant): computed once here, then read like initializers
  // (prepare() sees them as constants, and no step recomputes them).
  std::map<std::string, int> folded;
  for (const auto& node : graph_.nodes) {
    if (node.inputs.empty()) {
      for (const auto& out : node.outputs) folded[out] = add_value(out);
      std::vector<Tensor*> outs;  // after add_value: it may grow values_
      for (const auto& out : node.outputs) outs.push_back(&values_[folded[out]]);
      find_op(node.op).forward(node, {}, outs);
      if (verbose()) std::fprintf(stderr, "lowbit: node '%s' (%s): computed once (no inputs)\n", node.name.c_str(), node.op.c_str());
      continue;
    }
    Step step{&node, &find_op(node.op), {}, {}, false, nullptr};
    for (const auto& in : node.inputs) {
      auto it = ids_.find(in);
      if (it == ids_.end())
        throw Error(ErrorKind::Format, "node '" + node.name + "' reads '" + in + "' before it is defined (graph not validated?)");
      step.inputs.push_back(it->second);
    }
    bool any_grad = false;
    for (size_t i = 0; i < step.inputs.size(); ++i)
      any_grad |= needs_grad_[step.inputs[i]] && step.op->differentiable_input(static_cast<int>(i));
    for (const auto& out : node.outputs) {
      int id = add_value(out);
      step.outputs.push_back(id);
      needs_grad_[id] = any_grad;
    }
    step.run_backward = any_grad;
    std::vector<const Tensor*> constants;
    for (const auto& in : node.inputs) {
      auto it = graph_.initializers.find(in);
      auto f = folded.find(in);
      constants.push_back(it != graph_.initializers.end() ? &it->second : f != folded.end() ? &values_[f->second] : nullptr);
    }
    step.state = step.op->prepare(node, constants);
    if (verbose())
      std::fprintf(stderr, "lowbit: node '%s' (%s): %s\n", node.name.c_str(), node.op.c_str(),
                   step.op->describe(node, step.state.get()).c_str());
    steps_.push_back(std::move(step));
  }
  for (const auto& [name, tensor] : graph_.initializers) constant_ids_.push_back(ids_.at(name));
  for (const auto& [name, id] : folded) constant_ids_.push_back(id);
  grads_.resize(values_.size());
  size_t max_inputs = 0;
  for (const auto& step : steps_) max_inputs = std::max(max_inputs, step.inputs.size());
  scratch_.resize(max_inputs);  // never resized again: backward() hands out pointers into it
  consumers_.assign(values_.size(), 0);
  for (const auto& step : steps_) {
    if (!step.run_backward) continue;
    for (size_t i = 0; i < step.inputs.size(); ++i)
      if (needs_grad_[step.inputs[i]] && step.op->differentiable_input(static_cast<int>(i))) ++consumers_[step.inputs[i]];
  }
  // Parameters: f32 initializers that some node differentiates (a FakeQuantize scale set by an
  // observer, say, is f32 but nobody asks for its gradient, so no optimizer touches it).
  for (const auto& [name, tensor] : graph_.initializers) {
    int id = ids_.at(name);
    if (needs_grad_[id] && consumers_[id] > 0) {
      grads_[id] = Tensor(DType::F32, tensor.shape());
      parameters_.push_back({name, tensor, &grads_[id], 1.0f});
    }
  }
  parameter_of_.assign(values_.size(), -1);
  for (size_t p = 0; p < parameters_.size(); ++p) parameter_of_[ids_.at(parameters_[p].name)] = static_cast<int>(p);
  // A parameter's gradient is complete after the last backward step (in backward's order) that
  // contributes to it.
  std::vector<int> received(values_.size(), 0);
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    if (!it->run_backward) continue;
    for (size_t i = 0; i < it->inputs.size(); ++i) {
      const int id = it->inputs[i];
      if (needs_grad_[id] && it->op->differentiable_input(static_cast<int>(i)) && ++received[id] == consumers_[id] &&
          parameter_of_[id] >= 0)
        gradient_order_.push_back(static_cast<size_t>(parameter_of_[id]));
    }
  }
}

int Executor::id_of(const std::string& name) const {
  auto it = ids_.find(name);
  if (it == ids_.end()) throw Error(ErrorKind::InvalidArgument, "the graph has no value named '" + name + "'");
  return it->second;
}

Tensor& Executor::input(const std::string& name) {
  for (const auto& in : graph_.inputs)
    if (in.name == name) return values_[id_of(name)];
  throw Error(ErrorKind::InvalidArgument, "'" + name + "' is not an input of the graph");
}

const Tensor& Executor::value(const std::string& name) const { return values_[id_of(name)]; }

void Executor::set_profiling(bool on) {
  profiling_ = on;
  node_times_.clear();
  if (on)
    for (const auto& step : steps_) node_times_.push_back({step.node->name, step.node->op, 0.0, 0});
}

void Executor::forward() {
  ScopedRunSettings scope(settings_);
  run_steps(values_, workspace_, profiling_ ? &node_times_ : nullptr);
  if (context_.training) ++context_.step;
}

std::vector<Tensor> Executor::run(const std::map<std::string, Tensor>& inputs) const {
  if (context_.training)
    throw Error(ErrorKind::InvalidArgument, "run() is for inference executors; a training executor runs forward() on one thread");
  ScopedRunSettings scope(settings_);
  std::vector<Tensor> values(values_.size());  // this call's values; constants shared read-only
  for (int id : constant_ids_) values[id] = values_[id];
  for (const auto& in : graph_.inputs) {
    auto it = inputs.find(in.name);
    if (it == inputs.end()) throw Error(ErrorKind::InvalidArgument, "run(): no tensor for the graph's input '" + in.name + "'");
    values[ids_.at(in.name)] = it->second;
  }
  for (const auto& given : inputs)
    if (std::none_of(graph_.inputs.begin(), graph_.inputs.end(), [&](const ValueInfo& in) { return in.name == given.first; }))
      throw Error(ErrorKind::InvalidArgument, "run(): '" + given.first + "' is not an input of the graph");
  Workspace workspace;
  run_steps(values, workspace, nullptr);
  std::vector<Tensor> outputs;
  for (const auto& name : graph_.outputs) outputs.push_back(std::move(values[ids_.at(name)]));
  return outputs;
}

void Executor::run_steps(std::vector<Tensor>& values, Workspace& workspace, std::vector<NodeTime>* times) const {
  std::vector<const Tensor*> ins;
  for (const auto& in : graph_.inputs) ins.push_back(&values[ids_.at(in.name)]);
  graph_.check_inputs(ins);
  std::vector<Tensor*> mutable_ins, outs;
  for (const auto& step : steps_) {
    ins.clear();
    mutable_ins.clear();
    outs.clear();
    for (int id : step.outputs) outs.push_back(&values[id]);
    workspace.reset();  // before, not after: a node that threw may have left buffers taken
    const auto start = times ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    if (context_.training) {
      for (int id : step.inputs) mutable_ins.push_back(&values[id]);
      step.op->forward_train(*step.node, step.state.get(), context_, mutable_ins, outs, workspace);
    } else {
      for (int id : step.inputs) ins.push_back(&values[id]);
      step.op->forward_prepared(*step.node, step.state.get(), ins, outs, workspace);
    }
    if (times) {
      NodeTime& t = (*times)[static_cast<size_t>(&step - steps_.data())];
      t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++t.runs;
    }
  }
}

void Executor::backward(const std::string& loss, const GradientsReady& after_step, float loss_scale) {
  ScopedRunSettings scope(settings_);
  const int loss_id = id_of(loss);
  if (!needs_grad_[loss_id]) throw Error(ErrorKind::InvalidArgument, "'" + loss + "' does not depend on any trainable value");
  grads_[loss_id].resize(values_[loss_id].shape());
  std::fill_n(grads_[loss_id].data<float>(), grads_[loss_id].numel(), loss_scale);
  std::vector<int> received(values_.size(), 0);
  std::vector<const Tensor*> ins, outs, out_grads;
  std::vector<Tensor*> in_grads;
  std::vector<size_t> ready;
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    const Step& step = *it;
    if (!step.run_backward) continue;
    ins.clear(), outs.clear(), out_grads.clear(), in_grads.clear();
    for (int id : step.inputs) ins.push_back(&values_[id]);
    for (int id : step.outputs) {
      outs.push_back(&values_[id]);
      out_grads.push_back(&grads_[id]);
    }
    // The first contribution to a gradient is written in place; later ones go through scratch and
    // are added, so a value read by several nodes gets the sum of their gradients. A node reading
    // one value twice (Add(x, x)) gets one scratch tensor per extra slot, added in input order.
    std::vector<std::pair<int, Tensor*>> accumulate;
    ready.clear();
    for (size_t i = 0; i < step.inputs.size(); ++i) {
      int id = step.inputs[i];
      if (!needs_grad_[id] || !step.op->differentiable_input(static_cast<int>(i))) {
        in_grads.push_back(nullptr);
        continue;
      }
      if (received[id] + 1 == consumers_[id] && parameter_of_[id] >= 0) ready.push_back(static_cast<size_t>(parameter_of_[id]));
      if (received[id]++ == 0) {
        in_grads.push_back(&grads_[id]);
      } else {
        Tensor* scratch = &scratch_[accumulate.size()];
        in_grads.push_back(scratch);
        accumulate.emplace_back(id, scratch);
      }
    }
    workspace_.reset();
    step.op->backward_prepared(*step.node, step.state.get(), ins, outs, out_grads, in_grads, workspace_);
    for (auto [id, scratch] : accumulate) {
      float* dst = grads_[id].data<float>();
      const float* src = scratch->data<float>();
      for (int64_t i = 0; i < grads_[id].numel(); ++i) dst[i] += src[i];
    }
    if (after_step) after_step(ready);
  }
}

}  // namespace lowbit
