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

TEST(Attribute, KindsAccessorsAndErrors) {
  Node node{"n", "Dense", {}, {}, {{"i", 3}, {"f", 0.25}, {"s", "relu"}, {"ints", {1, 2}}, {"one", {7}}}};
  node.attributes["floats"] = std::vector<double>{0.5, 2};
  node.attributes["strings"] = std::vector<std::string>{"a", "b"};
  EXPECT_EQ(node.attr_int("i", 0), 3);
  EXPECT_EQ(node.attr_float("i", 0), 3.0);  // an integer reads as a float
  EXPECT_EQ(node.attr_float("f", 0), 0.25);
  EXPECT_EQ(node.attr_string("s", ""), "relu");
  EXPECT_EQ(node.attr_ints("ints", {}), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(node.attr_ints("one", {}), (std::vector<int64_t>{7}));  // a braced list is a list
  EXPECT_EQ(node.attr_int("absent", 9), 9);
  EXPECT_EQ(node.attr("floats").as_floats(), (std::vector<double>{0.5, 2.0}));
  EXPECT_EQ(node.attr("ints").as_floats(), (std::vector<double>{1.0, 2.0}));
  EXPECT_EQ(node.attr("strings").as_strings(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(node.attr("ints").to_string(), "[1, 2]");
  EXPECT_EQ(node.attr("s").to_string(), "\"relu\"");
  EXPECT_EQ(node.attr("floats").to_string(), "[0.5, 2]");
  EXPECT_EQ(Attribute(true), Attribute(1));
  EXPECT_NE(Attribute(1), Attribute(1.0));  // kinds differ
  EXPECT_LOWBIT_ERROR(node.attr_int("f", 0), "node 'n': attribute 'f' is a float, expected an integer");
  EXPECT_LOWBIT_ERROR(node.attr_string("ints", ""), "node 'n': attribute 'ints' is a list of integers, expected a string");
  EXPECT_LOWBIT_ERROR(node.attr_ints("s", {}), "node 'n': attribute 's' is a string, expected a list of integers");
  EXPECT_LOWBIT_ERROR(node.attr("absent"), "node 'n' (Dense): attribute 'absent' is required");
}

TEST(OpRegistry, ListsBuiltins) {
  auto ops = registered_ops();
  for (const char* name : {"Dense", "Relu", "Softmax", "Flatten", "SoftmaxCrossEntropy"})
    EXPECT_NE(std::find(ops.begin(), ops.end(), name), ops.end()) << name;
}

// The traits that link ops to each other must agree: a quantizable layer's integer counterparts
// name it as their float op, and so on; the passes rely on these links instead of name lists.
TEST(OpTraits, CounterpartsAreRegisteredAndLinkBack) {
  int quantizable = 0, integer = 0;
  for (const auto& type : registered_ops()) {
    const OpTraits& t = find_op(type).traits();
    EXPECT_GE(t.version, 1) << type;
    if (t.is_quantizable()) {
      ++quantizable;
      ASSERT_TRUE(has_op(t.quantized_op)) << type;
      EXPECT_EQ(find_op(t.quantized_op).traits().float_op, type);
      EXPECT_FALSE(find_op(t.quantized_op).traits().dynamic);
      if (t.has_weights()) {  // (a layer without weights, Attention, has only a static form)
        ASSERT_TRUE(has_op(t.dynamic_op)) << type;
        EXPECT_EQ(find_op(t.dynamic_op).traits().float_op, type);
        EXPECT_TRUE(find_op(t.dynamic_op).traits().dynamic);
      } else {
        EXPECT_TRUE(t.dynamic_op.empty() && t.block_op.empty()) << type;
      }
      if (!t.block_op.empty()) {
        ASSERT_TRUE(has_op(t.block_op)) << type;
        EXPECT_EQ(find_op(t.block_op).traits().float_op, type);
        EXPECT_TRUE(find_op(t.block_op).traits().block_weights);
      }
    }
    if (t.is_integer_layer()) {
      ++integer;
      ASSERT_TRUE(has_op(t.float_op)) << type;
      const OpTraits& f = find_op(t.float_op).traits();
      EXPECT_EQ(t.block_weights ? f.block_op : t.dynamic ? f.dynamic_op : f.quantized_op, type);
    }
    if (!t.fusable_as.empty()) {  // the fused form must be an activation the layers accept
      Node n{"n", "Dense", {"x", "w"}, {"y"}, {{"activation", t.fusable_as}}};
      const std::vector<Shape> shapes = {{2, 4}, {3, 4}};
      EXPECT_NO_THROW(find_op("Dense").infer_shapes(n, shapes)) << type;
    }
    if (t.layout_only) {
      EXPECT_TRUE(t.passes_quantized) << type;
    }
    if (t.learns_scale) {
      EXPECT_TRUE(t.fake_quantize) << type;
    }
  }
  EXPECT_EQ(quantizable, 3);  // Dense, Conv2D, Attention
  EXPECT_EQ(integer, 6);      // their static integer forms, the dynamic ones of Dense and Conv2D, Dense's block form
  EXPECT_EQ(traits_of(Node{"q", "QuantizeLinear"}).boundary, OpTraits::Boundary::Quantize);
  EXPECT_LOWBIT_ERROR(traits_of(Node{"x", "NoSuchOp"}), "unknown op type 'NoSuchOp'");
}

}  // namespace
}  // namespace lowbit
