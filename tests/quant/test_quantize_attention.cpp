// Static int8 attention: quantize_model makes a small trained vision transformer's Attention nodes
// QAttention (s8 q, k, v from the projections, s8 output into the next integer layer), keeps the
// accuracy, saves, dequantizes back; dynamic, weight-only (block) and partial plans and QAT leave
// attention float; sensitivity analysis and the search treat it as a layer without weights.
#include <algorithm>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::kTinyVit;
using testing::quadrant_images;

struct TrainedVit {
  Graph model;
  Dataset test;
  std::map<std::string, Calibration> ranges;
  double float_accuracy = 0;
};

const TrainedVit& trained_vit() {
  static const TrainedVit t = [] {
    TrainedVit t;
    const Dataset data = quadrant_images(2000, 4);
    t.test = quadrant_images(500, 3);
    t.model = build_model({kTinyVit}, data.sample_shape(), 4, 7);
    TrainOptions o;
    o.epochs = 4;
    o.batch_size = 16;
    o.seed = 7;
    train(t.model, data, o);
    t.ranges["minmax"] = calibrate(t.model, data, {});
    t.float_accuracy = evaluate(t.model, t.test).accuracy;
    return t;
  }();
  return t;
}

std::vector<const Node*> nodes_of(const Graph& g, const std::string& op) {
  std::vector<const Node*> found;
  for (const auto& n : g.nodes)
    if (n.op == op) found.push_back(&n);
  return found;
}

TEST(QuantizeAttention, StaticInt8RunsAttentionOnCodes) {
  const TrainedVit& t = trained_vit();
  ASSERT_GT(t.float_accuracy, 0.9);
  const Graph q = quantize_model(t.model, QuantPlan{}, t.ranges);
  EXPECT_TRUE(nodes_of(q, "Attention").empty());
  const auto attention = nodes_of(q, "QAttention");
  ASSERT_EQ(attention.size(), 1u);
  const auto info = q.infer_shapes();
  // q, k and v come straight from the integer projections as s8; the output goes to the next
  // integer layer as s8 (no float tensor around the attention).
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(info.at(attention[0]->inputs[i]).dtype, DType::S8) << i;
    EXPECT_EQ(q.nodes[q.producer(attention[0]->inputs[i])].op, "QDense") << i;
  }
  EXPECT_EQ(info.at(attention[0]->outputs[0]).dtype, DType::S8);
  EXPECT_GE(evaluate(q, t.test).accuracy, t.float_accuracy - 0.01);
  testing::TempDir dir;
  save_model(q, dir.file("q.lbm"));
  EXPECT_EQ(predict_classes(load_model(dir.file("q.lbm")), t.test), predict_classes(q, t.test));
  // Dequantized: the float graph's ops again, with the attention float.
  const Graph back = dequantize_model(q);
  EXPECT_FALSE(is_quantized(back));
  EXPECT_EQ(nodes_of(back, "Attention").size(), 1u);
  EXPECT_GE(evaluate(back, t.test).accuracy, t.float_accuracy - 0.01);
  // The per-layer comparison reads the attention's s8 output on its grid.
  const std::string heads = attention[0]->name;
  const auto sensitivity = analyze_sensitivity(t.model, t.test, LayerRule{}, QuantMode::Full, t.ranges);
  const auto s = std::find_if(sensitivity.begin(), sensitivity.end(), [&](const LayerSensitivity& l) { return l.layer == heads; });
  ASSERT_NE(s, sensitivity.end());
  EXPECT_EQ(s->parameters, 0);
  EXPECT_GT(s->cosine, 0.99);
}

TEST(QuantizeAttention, DynamicWeightOnlyPartialAndQatPlansLeaveItFloat) {
  const TrainedVit& t = trained_vit();
  const std::string heads = nodes_of(t.model, "Attention").at(0)->name;
  QuantPlan dynamic;
  dynamic.mode = QuantMode::Dynamic;
  EXPECT_EQ(nodes_of(quantize_model(t.model, dynamic, {}), "Attention").size(), 1u);
  // Block weights (weight-only): no calibration ranges needed, attention float.
  QuantPlan blocks;
  blocks.defaults.weight_bits = 4;
  blocks.defaults.group_size = 32;
  const Graph b = quantize_model(t.model, blocks, {});
  EXPECT_EQ(nodes_of(b, "Attention").size(), 1u);
  EXPECT_FALSE(nodes_of(b, "BlockQDense").empty());
  // A full plan whose rule keeps the attention float, and a partial plan that does not list it.
  QuantPlan keep;
  keep.layers[heads].quantize = false;
  const Graph k = quantize_model(t.model, keep, t.ranges);
  EXPECT_EQ(nodes_of(k, "Attention").size(), 1u);
  EXPECT_GE(evaluate(k, t.test).accuracy, t.float_accuracy - 0.01);
  // The same by pattern (QuantizeOptions::float_layers, the CLI's --float-layers); not beside a plan.
  QuantizeOptions o;
  o.ranges = t.ranges;
  o.float_layers = "*.heads";
  const QuantizeResult r = quantize(t.model, o);
  EXPECT_EQ(nodes_of(r.model, "Attention").size(), 1u);
  EXPECT_FALSE(r.plan.rule_for(heads).quantize);
  EXPECT_TRUE(r.plan.rule_for("dense_1").quantize);
  o.plan = QuantPlan{};
  EXPECT_LOWBIT_ERROR(quantize(t.model, o), "float layers are chosen here or by the plan");
  o.plan.reset();
  o.float_layers = "nothing*";
  EXPECT_LOWBIT_ERROR(quantize(t.model, o), "layer pattern 'nothing*' matches no quantizable layer");
  QuantPlan partial;
  partial.mode = QuantMode::Partial;
  partial.layers["dense_1"] = LayerRule{};
  EXPECT_EQ(nodes_of(quantize_model(t.model, partial, t.ranges), "Attention").size(), 1u);
  // Dynamic sensitivity analysis has nothing to measure for it.
  for (const auto& s : analyze_sensitivity(t.model, t.test, LayerRule{}, QuantMode::Dynamic, {})) EXPECT_NE(s.layer, heads);
  // QAT fake-quantizes the layers with weights; its integer model keeps the attention float.
  const Graph fq = prepare_qat(t.model, QatOptions{}, t.ranges.at("minmax"));
  EXPECT_EQ(nodes_of(fq, "Attention").size(), 1u);
  const Graph converted = convert_qat(fq);
  EXPECT_EQ(nodes_of(converted, "Attention").size(), 1u);
  EXPECT_TRUE(nodes_of(converted, "QAttention").empty());
  EXPECT_FALSE(nodes_of(converted, "QDense").empty());
}

}  // namespace
}  // namespace lowbit
