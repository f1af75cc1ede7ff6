#include "test_util.h"

namespace lowbit {
namespace {

Graph small_graph() {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 4}});
  g.initializers["w"] = Tensor::zeros({3, 4});
  g.add_node({"relu", "Relu", {"h"}, {"y"}});  // deliberately before its producer
  g.add_node({"fc", "Dense", {"x", "w"}, {"h"}});
  g.outputs = {"y"};
  return g;
}

TEST(Graph, ValidateSortsTopologicallyAndInfersShapes) {
  Graph g = small_graph();
  g.validate();
  EXPECT_EQ(g.nodes[0].name, "fc");
  EXPECT_EQ(g.nodes[1].name, "relu");
  auto shapes = g.infer_shapes();
  EXPECT_EQ(shapes.at("y").shape, (Shape{-1, 3}));
  EXPECT_EQ(g.parameter_count(), 12);
}

TEST(Graph, RejectsUndefinedValues) {
  Graph g = small_graph();
  g.nodes[0].inputs = {"nowhere"};
  EXPECT_LOWBIT_ERROR(g.validate(), "reads value 'nowhere', which nothing defines");
}

TEST(Graph, RejectsCycles) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 4}});
  g.add_node({"a", "Relu", {"b_out"}, {"a_out"}});
  g.add_node({"b", "Relu", {"a_out"}, {"b_out"}});
  g.outputs = {"a_out"};
  EXPECT_LOWBIT_ERROR(g.validate(), "cycle");
}

TEST(Graph, RejectsDoubleDefinitionsAndUnknownOps) {
  Graph g = small_graph();
  g.nodes[0].outputs = {"h"};
  EXPECT_LOWBIT_ERROR(g.validate(), "defined more than once");
  Graph u = small_graph();
  u.nodes[0].op = "Frobnicate";
  EXPECT_LOWBIT_ERROR(u.validate(), "unknown op type 'Frobnicate'");
}

TEST(Graph, ShapeMismatchNamesTheNode) {
  Graph g = small_graph();
  g.initializers["w"] = Tensor::zeros({3, 5});
  EXPECT_LOWBIT_ERROR(g.validate(), "node 'fc' (Dense)");
}

TEST(Graph, HoldsADagWithSharedInputs) {
  // One value read by two nodes (a DAG, not a chain): both branches see the same input.
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 4}});
  g.initializers["w1"] = Tensor::zeros({2, 4});
  g.initializers["w2"] = Tensor::zeros({5, 4});
  g.add_node({"a", "Dense", {"x", "w1"}, {"ya"}});
  g.add_node({"b", "Dense", {"x", "w2"}, {"yb"}});
  g.outputs = {"ya", "yb"};
  g.validate();
  auto s = g.infer_shapes();
  EXPECT_EQ(s.at("ya").shape, (Shape{-1, 2}));
  EXPECT_EQ(s.at("yb").shape, (Shape{-1, 5}));
}

TEST(OpRegistry, ListsBuiltins) {
  auto ops = registered_ops();
  for (const char* name : {"Dense", "Relu", "Softmax", "Flatten", "SoftmaxCrossEntropy"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), name), ops.end()) << name;
}

}  // namespace
}  // namespace lowbit
