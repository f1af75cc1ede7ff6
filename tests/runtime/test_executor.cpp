// The executor's ownership rules: it keeps its own copy of the graph (the caller's may change or
// go away) while sharing the initializers' storage, and runs on caller-owned memory (Tensor::wrap).
#include <cstring>
#include <thread>
#include <vector>

#include "test_util.h"

namespace lowbit {
namespace {

Graph scale_graph(float factor) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 3}});
  g.initializers["w"] = Tensor::from_vector({3, 3}, std::vector<float>{factor, 0, 0, 0, factor, 0, 0, 0, factor});
  g.add_node({"fc", "Dense", {"x", "w"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  return g;
}

TEST(Executor, OutlivesTheGraphItWasBuiltFrom) {
  auto graph = std::make_unique<Graph>(scale_graph(2.0f));
  Executor run(*graph);
  Tensor w = graph->initializers["w"];  // shares storage with the executor's copy
  graph->nodes.clear();                 // the caller's graph changes, then goes away
  graph.reset();
  run.input("x") = Tensor::from_vector({1, 3}, std::vector<float>{1, 2, 3});
  run.forward();
  EXPECT_EQ(run.value("y").data<float>()[2], 6.0f);
  w.data<float>()[8] = 10.0f;  // initializers are shared: an update reaches the executor
  run.forward();
  EXPECT_EQ(run.value("y").data<float>()[2], 30.0f);
}

// Scratch memory is the executor's: a float CNN's training step (im2col forward and backward, the
// Dense layer's masked gradient) needs a workspace, and the second step uses the same one.
TEST(Executor, PlansScratchOnceAndReusesIt) {
  const std::string arch = R"({"layers": [{"type": "reshape", "shape": [1, 8, 8]},
      {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1, "activation": "relu"},
      {"type": "conv2d", "filters": 6, "kernel": 3, "stride": 2}, {"type": "flatten"},
      {"type": "dense", "units": 3}, {"type": "softmax"}]})";
  Graph model = build_model(parse_arch(arch), {8, 8}, 3, 0);
  Graph train_graph = model;
  train_graph.outputs = {logits_value(model)};
  train_graph.nodes.pop_back();  // the softmax
  Executor train(train_graph, true);
  train.input("image") = testing::random_bytes({5, 8, 8}, 4);
  auto step = [&] {
    train.forward();
    const std::string logits = train_graph.outputs[0];
    train.backward(logits);
  };
  step();
  const size_t first = train.workspace_bytes();
  EXPECT_GT(first, 0u);
  step();
  EXPECT_EQ(train.workspace_bytes(), first);
}

TEST(Executor, RunsOnCallerOwnedMemoryWithoutACopy) {
  const Graph g = scale_graph(3.0f);
  Executor run(g);
  auto pixels = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  Tensor x = Tensor::wrap(DType::F32, {2, 3}, pixels->data(), pixels);
  EXPECT_EQ(x.data<float>(), pixels->data());  // a view, not a copy
  std::weak_ptr<std::vector<float>> alive = pixels;
  pixels.reset();  // the tensor keeps the caller's buffer alive
  EXPECT_FALSE(alive.expired());
  run.input("x") = x;
  run.forward();
  EXPECT_EQ(run.value("y").data<float>()[5], 18.0f);
  x = Tensor();
  run.input("x") = Tensor();
  EXPECT_TRUE(alive.expired());  // the last view gone: released
  // Writes through a view reach the caller's memory; bad pointers are refused.
  std::vector<int32_t> codes(4, 0);
  Tensor c = Tensor::wrap(DType::S32, {4}, codes.data(), nullptr);
  c.data<int32_t>()[1] = 7;
  EXPECT_EQ(codes[1], 7);
  EXPECT_LOWBIT_ERROR(Tensor::wrap(DType::F32, {2}, nullptr, nullptr), "Tensor::wrap: null data for a [2] tensor");
  EXPECT_LOWBIT_ERROR(Tensor::wrap(DType::F32, {2}, reinterpret_cast<std::byte*>(codes.data()) + 1, nullptr),
                      "f32 data must be aligned to 4 bytes");
}

TEST(RunSettings, ScopesNestAndRestoreTheProcessSettings) {
  const int process_threads = num_threads();
  const Isa process_isa = active_isa();
  {
    ScopedRunSettings outer({.threads = 3});
    EXPECT_EQ(num_threads(), 3);
    EXPECT_EQ(active_isa(), process_isa);
    {
      ScopedRunSettings inner({.threads = 1, .max_isa = Isa::Reference});
      EXPECT_EQ(num_threads(), 1);
      EXPECT_EQ(active_isa(), Isa::Reference);
      if (process_isa != Isa::Reference) {
        EXPECT_STREQ(isa_cap_reason(), "capped by RunSettings::max_isa");
      }
    }
    EXPECT_EQ(num_threads(), 3);
    EXPECT_EQ(active_isa(), process_isa);
  }
  EXPECT_EQ(num_threads(), process_threads);
  EXPECT_LOWBIT_ERROR(ScopedRunSettings({.threads = -1}), "thread count must be at least 1");
  // Another thread does not see this thread's scope.
  ScopedRunSettings here({.threads = 5});
  int there = 0;
  std::thread([&] { there = num_threads(); }).join();
  EXPECT_EQ(there, process_threads);
}

TEST(RunSettings, AnExecutorUsesItsOwnSettingsAndLeavesTheProcessAlone) {
  Graph g = build_model(parse_arch("20-16-4"), {20}, 4, 3);
  const Tensor x = testing::random_bytes({64, 20}, 9);
  const int process_threads = num_threads();
  std::vector<Tensor> outputs;
  for (const RunSettings& s : {RunSettings{.threads = 1}, RunSettings{.threads = 2},
                               RunSettings{.threads = 1, .max_isa = Isa::Reference}}) {
    Executor run(g, false, s);
    run.input(g.inputs[0].name) = x;
    run.forward();
    EXPECT_EQ(num_threads(), process_threads);
    outputs.push_back(run.value(g.outputs[0]).clone());
  }
  // The thread count never changes results; the reference GEMM agrees within the gemm.h bound.
  EXPECT_EQ(std::memcmp(outputs[0].raw(), outputs[1].raw(), outputs[0].nbytes()), 0);
  for (int64_t i = 0; i < outputs[0].numel(); ++i) EXPECT_NEAR(outputs[2].data<float>()[i], outputs[0].data<float>()[i], 1e-5);
}

TEST(ModelFile, ReportsTheFormatVersionOfAFile) {
  testing::TempDir dir;
  save_model(build_model(parse_arch("4-3-2"), {4}, 2, 0), dir.file("m.lbm"));
  EXPECT_EQ(model_file_version(dir.file("m.lbm")), kModelFormatVersion);
  EXPECT_EQ(model_file_version(LOWBIT_SOURCE_DIR "/tests/data/format-v1/mlp-int8.lbm"), 1u);
  testing::write_bytes(dir.file("x.lbm"), "not a model at all");
  EXPECT_LOWBIT_ERROR(model_file_version(dir.file("x.lbm")), "is not a lowbit model file");
}

// backward()'s callback names each parameter once, at the step that completes its gradient, in
// the order gradient_order() gives: a weight read by two nodes is complete after the second (in
// backward's order) has added its share. loss_scale scales every gradient.
TEST(Executor, ReportsEachParameterWhenItsGradientIsComplete) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 3}});
  g.initializers["w"] = Tensor::from_vector({3, 3}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  g.initializers["v"] = Tensor::from_vector({3, 3}, std::vector<float>{1, 0, 1, 0, 1, 0, 1, 0, 1});
  g.add_node({"a", "Dense", {"x", "w"}, {"h"}});  // w read here ...
  g.add_node({"b", "Dense", {"h", "v"}, {"k"}});
  g.add_node({"c", "Dense", {"k", "w"}, {"y"}});  // ... and here
  g.add_node({"s", "ReduceSum", {"y"}, {"loss"}, {{"keepdims", int64_t{0}}}});
  g.outputs = {"loss"};
  g.validate();
  Executor run(g, true);
  const auto& params = run.parameters();
  ASSERT_EQ(params.size(), 2u);
  auto name = [&](size_t p) { return params[p].name; };
  ASSERT_EQ(run.gradient_order().size(), 2u);
  EXPECT_EQ(name(run.gradient_order()[0]), "v");  // backward: c (w's first share), b (v complete), a (w complete)
  EXPECT_EQ(name(run.gradient_order()[1]), "w");
  run.input("x") = Tensor::from_vector({2, 3}, std::vector<float>{1, -2, 3, 0.5f, 1, -1});
  run.forward();
  std::vector<size_t> reported;
  int steps = 0;
  run.backward("loss", [&](std::span<const size_t> ready) {
    ++steps;
    reported.insert(reported.end(), ready.begin(), ready.end());
  });
  EXPECT_EQ(steps, 4);
  EXPECT_EQ(reported, run.gradient_order());
  std::vector<std::vector<float>> once;
  for (const auto& p : params) once.emplace_back(p.grad->data<float>(), p.grad->data<float>() + p.grad->numel());
  run.backward("loss", nullptr, 0.25f);
  for (size_t p = 0; p < params.size(); ++p)
    for (int64_t i = 0; i < params[p].grad->numel(); ++i)
      EXPECT_EQ(params[p].grad->data<float>()[i], once[p][static_cast<size_t>(i)] * 0.25f) << name(p) << " " << i;
}

}  // namespace
}  // namespace lowbit
