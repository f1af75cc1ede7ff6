// The ONNX importer on real files (PyTorch's exports in tests/data/onnx, made by
// tests/onnx/make_models.py) and on malformed ones built here, and the exporter's round trip.
#include <gmock/gmock.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <regex>

#include "graph/gradcheck.h"
#include "lowbit/npy.h"
#include "lowbit/onnx.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::TempDir;

std::string data_dir() { return std::string(LOWBIT_SOURCE_DIR) + "/tests/data/onnx/"; }

// A .npy file (numpy's format: magic, a header dict, then the raw little-endian array): uint8 or
// float32, C order.
Tensor read_npy(const std::string& path) {
  const std::string bytes = testing::read_bytes(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + ": not .npy");
  const size_t header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
  const std::string header = bytes.substr(10, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex("'shape': \\(([0-9, ]*)\\)"))) throw std::runtime_error(path + ": no shape");
  Shape shape;
  std::string dims = m[1];
  const std::regex number("[0-9]+");
  for (std::sregex_iterator it(dims.begin(), dims.end(), number), end; it != end; ++it) shape.push_back(std::stoll(it->str()));
  const DType dtype = header.find("'<f4'") != std::string::npos ? DType::F32 : DType::U8;
  Tensor t(dtype, shape);
  std::memcpy(t.raw(), bytes.data() + 10 + header_len, t.nbytes());
  return t;
}

// How many of the 10000 test classes `ours` equal ONNX Runtime's, stored in
// tests/data/onnx/<name>.classes.npy (printed too).
int64_t agreement_with_ort(const std::string& name, const std::vector<int32_t>& ours) {
  const Tensor theirs = read_npy(data_dir() + name + ".classes.npy");
  int64_t agree = 0;
  for (int64_t i = 0; i < 10000; ++i) agree += ours[i] == theirs.data<uint8_t>()[i];
  std::printf("%s: %lld of 10000 classes as ONNX Runtime's\n", name.c_str(), static_cast<long long>(agree));
  return agree;
}

TEST(OnnxImport, PyTorchExportsReproducePyTorchsPredictions) {
  const DatasetSplits data = load_dataset_dir(testing::test_dataset_dir());
  for (const std::string model : {"mlp", "cnn", "resnet_dw"}) {
    const Tensor classes = read_npy(data_dir() + model + ".classes.npy");
    const Tensor logits = read_npy(data_dir() + model + ".logits.npy");
    for (const std::string opset : {"13", "17"}) {
      SCOPED_TRACE(model + " opset " + opset);
      const Graph g = import_onnx(data_dir() + model + "_op" + opset + ".onnx");
      const Tensor ours = compute_logits(g, data.test);
      ASSERT_EQ(ours.shape(), (Shape{10000, 10}));
      int64_t agree = 0;
      for (int64_t i = 0; i < 10000; ++i) {
        const float* row = ours.data<float>() + i * 10;
        agree += std::max_element(row, row + 10) - row == classes.data<uint8_t>()[i];
      }
      EXPECT_GE(agree, 9990) << "classes agreeing with PyTorch's";
      // Relative to each row's largest logit (the scale of the output): max |got - want| / max |want|.
      double worst = 0;
      for (int64_t r = 0; r < logits.shape()[0]; ++r) {
        double diff = 0, scale = 0;
        for (int64_t c = 0; c < 10; ++c) {
          const double want = logits.data<float>()[r * 10 + c], got = ours.data<float>()[r * 10 + c];
          diff = std::max(diff, std::fabs(got - want));
          scale = std::max(scale, std::fabs(want));
        }
        worst = std::max(worst, diff / scale);
      }
      EXPECT_LE(worst, 1e-4) << "largest relative logit difference on the first 1000 images";
      std::printf("%s opset %s: %lld of 10000 classes as PyTorch, logits within %.2g relative\n", model.c_str(), opset.c_str(), (long long)agree, worst);
    }
  }
}

// ---- malformed models: one clear error each, never a crash ----

// A model of the default domain at `opset` whose graph has one input x, f32 [batch, 4].
onnx::ModelProto model_with_input(const std::string& name, int opset) {
  onnx::ModelProto m;
  m.set_ir_version(7);
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(opset);
  auto* g = m.mutable_graph();
  g->set_name(name);
  auto* in = g->add_input();
  in->set_name("x");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  tt->mutable_shape()->add_dim()->set_dim_param("batch");
  tt->mutable_shape()->add_dim()->set_dim_value(4);
  return m;
}

onnx::ModelProto tiny_model(int opset = 13) {
  onnx::ModelProto m = model_with_input("tiny", opset);
  auto* g = m.mutable_graph();
  auto* w = g->add_initializer();
  w->set_name("w");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(3);
  w->add_dims(4);
  for (int i = 0; i < 12; ++i) w->add_float_data(0.1f * static_cast<float>(i));
  auto* n = g->add_node();
  n->set_name("fc");
  n->set_op_type("Gemm");
  n->add_input("x");
  n->add_input("w");
  n->add_output("h");
  auto* a = n->add_attribute();
  a->set_name("transB");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(1);
  auto* r = g->add_node();
  r->set_name("act");
  r->set_op_type("Relu");
  r->add_input("h");
  r->add_output("y");
  g->add_output()->set_name("y");
  return m;
}

std::string import_error(const onnx::ModelProto& m, const std::string& folder = "") {
  try {
    import_onnx_bytes(m.SerializeAsString(), "m.onnx", folder);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(OnnxImport, TinyModelBecomesOneDenseWithItsRelu) {
  const Graph g = import_onnx_bytes(tiny_model().SerializeAsString(), "m.onnx", "");
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].op, "Dense");
  EXPECT_EQ(g.nodes[0].attr_string("activation", "none"), "relu");
  EXPECT_EQ(g.inputs[0].shape, (Shape{-1, 4}));
  Executor run(g);
  run.input("x") = Tensor::from_vector({2, 4}, std::vector<float>{1, 0, 0, 0, -1, 0, 0, 1});
  run.forward();
  const Tensor& y = run.value("y");
  EXPECT_FLOAT_EQ(y.data<float>()[1], 0.4f);          // row 0 . w[1] = w[1][0]
  EXPECT_FLOAT_EQ(y.data<float>()[3 + 1], 0.3f);      // -w[1][0] + w[1][3] = -0.4 + 0.7
}

TEST(OnnxImport, MalformedFilesGiveOneClearError) {
  const std::string good = tiny_model().SerializeAsString();
  auto error_of_bytes = [](const std::string& bytes) {
    try {
      import_onnx_bytes(bytes, "m.onnx", "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of_bytes(good.substr(0, good.size() / 2)), ::testing::HasSubstr("m.onnx: not an ONNX model"));
  std::string random(4096, '\0');
  Rng rng(7);
  for (auto& c : random) c = static_cast<char>(rng.below(256));
  EXPECT_FALSE(error_of_bytes(random).empty());

  onnx::ModelProto cyclic = tiny_model();
  cyclic.mutable_graph()->mutable_node(0)->set_input(0, "y");  // fc reads act's output, act reads fc's
  EXPECT_THAT(import_error(cyclic), ::testing::HasSubstr("the graph has a cycle through node"));

  onnx::ModelProto missing = tiny_model();
  missing.mutable_graph()->mutable_initializer()->Clear();
  EXPECT_THAT(import_error(missing), ::testing::HasSubstr("node 'fc' (Gemm) reads 'w', which no node, graph input or initializer defines"));

  onnx::ModelProto short_data = tiny_model();
  short_data.mutable_graph()->mutable_initializer(0)->mutable_float_data()->RemoveLast();
  EXPECT_THAT(import_error(short_data), ::testing::HasSubstr("tensor 'w': float_data holds 11 values, shape [3, 4] needs 12"));
  onnx::ModelProto short_raw = tiny_model();
  short_raw.mutable_graph()->mutable_initializer(0)->clear_float_data();
  short_raw.mutable_graph()->mutable_initializer(0)->set_raw_data(std::string(40, '\0'));
  EXPECT_THAT(import_error(short_raw), ::testing::HasSubstr("raw_data holds 40 bytes"));

  onnx::ModelProto mismatch = tiny_model();
  mismatch.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(5);
  EXPECT_THAT(import_error(mismatch), ::testing::HasSubstr("node 'fc'"));

  onnx::ModelProto domain = tiny_model();
  domain.mutable_graph()->mutable_node(1)->set_domain("com.example");
  EXPECT_THAT(import_error(domain), ::testing::HasSubstr("node 'act' (Relu): domain 'com.example' is not supported"));

  EXPECT_THAT(import_error(tiny_model(22)), ::testing::HasSubstr("opset 22 is newer than this build reads"));

  onnx::ModelProto escaping = tiny_model();
  auto* w = escaping.mutable_graph()->mutable_initializer(0);
  w->clear_float_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* kv = w->add_external_data();
  kv->set_key("location");
  kv->set_value("../../etc/passwd");
  TempDir dir;
  EXPECT_THAT(import_error(escaping, dir.path()), ::testing::HasSubstr("leaves the model's folder"));
  kv->set_value("/etc/passwd");
  EXPECT_THAT(import_error(escaping, dir.path()), ::testing::HasSubstr("must be relative to the model's folder"));
}

TEST(OnnxImport, ListsEveryUnsupportedNodeInOneError) {
  onnx::ModelProto m = tiny_model();
  auto* g = m.mutable_graph();
  g->mutable_node(1)->set_op_type("Hardmax");  // unsupported op
  auto* n = g->add_node();  // an unsupported attribute on a supported op
  n->set_name("flat");
  n->set_op_type("Flatten");
  n->add_input("x");
  n->add_output("z");
  auto* a = n->add_attribute();
  a->set_name("colour");
  a->set_type(onnx::AttributeProto::INT);
  g->add_output()->set_name("z");
  const std::string e = import_error(m);
  EXPECT_THAT(e, ::testing::HasSubstr("2 nodes cannot be imported"));
  EXPECT_THAT(e, ::testing::HasSubstr("node 'act' (Hardmax): op Hardmax is not supported"));
  EXPECT_THAT(e, ::testing::HasSubstr("node 'flat' (Flatten): attribute 'colour' is not supported"));
}

TEST(OnnxImport, ExternalDataLoadsFromTheModelsFolder) {
  TempDir dir;
  onnx::ModelProto m = tiny_model();
  auto* w = m.mutable_graph()->mutable_initializer(0);
  std::string raw(48, '\0');
  for (int i = 0; i < 12; ++i) {
    const float v = w->float_data(i);
    std::memcpy(raw.data() + 4 * i, &v, 4);
  }
  testing::write_bytes(dir.file("weights.bin"), std::string(16, 'x') + raw);
  w->clear_float_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  for (auto [k, v] : {std::pair<std::string, std::string>{"location", "weights.bin"}, {"offset", "16"}, {"length", "48"}}) {
    auto* kv = w->add_external_data();
    kv->set_key(k);
    kv->set_value(v);
  }
  testing::write_bytes(dir.file("m.onnx"), m.SerializeAsString());
  const Graph g = import_onnx(dir.file("m.onnx"));
  const Graph want = import_onnx_bytes(tiny_model().SerializeAsString(), "m.onnx", "");
  const Tensor& a = g.initializers.at("w");
  const Tensor& b = want.initializers.at("w");
  ASSERT_EQ(a.nbytes(), b.nbytes());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  testing::write_bytes(dir.file("weights.bin"), std::string(40, 'x'));  // too short now
  EXPECT_THROW(import_onnx(dir.file("m.onnx")), Error);
}

TEST(OnnxExport, FloatModelRoundTripsWithIdenticalOutputs) {
  Graph model = build_model(parse_arch("784-32-10"), {28, 28}, 10, 3);
  const OnnxExport e = export_onnx_bytes(model, {});
  const Graph back = import_onnx_bytes(e.bytes, "back.onnx", "");
  const Tensor x = testing::random_bytes({5, 28, 28}, 11);
  Executor a(model), b(back);
  a.input(model.inputs[0].name) = x;
  b.input(back.inputs[0].name) = x;
  a.forward();
  b.forward();
  const Tensor& ya = a.value(model.outputs[0]);
  const Tensor& yb = b.value(back.outputs[0]);
  ASSERT_EQ(ya.shape(), yb.shape());
  EXPECT_EQ(std::memcmp(ya.raw(), yb.raw(), ya.nbytes()), 0);
}

// QLinearMatMul with uint8 weights (codes 0 and 255 included, zero point 128: outside the integer
// layers' int8 range) reading a QuantizeLinear'd uint8 activation: ONNX's definition on the
// generic ops (MatMulInteger of the shifted codes, f32 rescale, QuantizeLinear), checked against
// that definition written out here.
TEST(OnnxImport, QLinearMatMulWithUint8WeightsFollowsOnnxsDefinition) {
  onnx::ModelProto m = model_with_input("qlinear", 13);
  auto* g = m.mutable_graph();
  auto scalar = [&](const std::string& name, int type, double v) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    if (type == onnx::TensorProto::FLOAT) t->add_float_data(static_cast<float>(v));
    else t->add_int32_data(static_cast<int32_t>(v));
  };
  scalar("sx", onnx::TensorProto::FLOAT, 0.05), scalar("zx", onnx::TensorProto::UINT8, 120);
  scalar("sw", onnx::TensorProto::FLOAT, 0.02), scalar("zw", onnx::TensorProto::UINT8, 128);
  scalar("sy", onnx::TensorProto::FLOAT, 0.1), scalar("zy", onnx::TensorProto::UINT8, 100);
  const std::vector<int> w = {0, 255, 17, 128, 200, 3, 99, 250, 1, 64, 190, 140};  // [4, 3]
  auto* wt = g->add_initializer();
  wt->set_name("w");
  wt->set_data_type(onnx::TensorProto::UINT8);
  wt->add_dims(4);
  wt->add_dims(3);
  for (int v : w) wt->add_int32_data(v);
  auto node = [&](const std::string& type, std::vector<std::string> ins, const std::string& out) {
    auto* n = g->add_node();
    n->set_op_type(type);
    n->set_name(out + "_node");
    for (const auto& i : ins) n->add_input(i);
    n->add_output(out);
  };
  node("QuantizeLinear", {"x", "sx", "zx"}, "q");
  node("QLinearMatMul", {"q", "sx", "zx", "w", "sw", "zw", "sy", "zy"}, "qy");
  node("DequantizeLinear", {"qy", "sy", "zy"}, "y");
  g->add_output()->set_name("y");
  const Graph graph = import_onnx_bytes(m.SerializeAsString(), "qlinear.onnx", "");
  Tensor x(DType::F32, {5, 4});
  Rng rng(3);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-6.0f, 6.0f);
  Executor run(graph);
  run.input("x") = x;
  run.forward();
  const Tensor& y = run.value("y");
  ASSERT_EQ(y.shape(), (Shape{5, 3}));
  const float multiplier = 0.05f * 0.02f / 0.1f;
  for (int64_t r = 0; r < 5; ++r)
    for (int64_t c = 0; c < 3; ++c) {
      int32_t acc = 0;
      for (int64_t k = 0; k < 4; ++k) {
        const float qx = std::clamp(std::nearbyint(x.data<float>()[r * 4 + k] / 0.05f) + 120.0f, 0.0f, 255.0f);
        acc += (static_cast<int32_t>(qx) - 120) * (w[k * 3 + c] - 128);
      }
      const float qy = std::clamp(std::nearbyint(static_cast<float>(acc) * multiplier) + 100.0f, 0.0f, 255.0f);
      EXPECT_FLOAT_EQ(y.data<float>()[r * 3 + c], (qy - 100.0f) * 0.1f) << "row " << r << ", column " << c;
    }
  // Exported (the generic integer ops as themselves) and imported again: the same outputs.
  const Graph back = import_onnx_bytes(export_onnx_bytes(graph, {}).bytes, "back.onnx", "");
  Executor again(back);
  again.input("x") = x;
  again.forward();
  ASSERT_EQ(again.value("y").shape(), y.shape());
  EXPECT_EQ(std::memcmp(again.value("y").raw(), y.raw(), y.nbytes()), 0);
}

// The generic integer ops a lowbit graph can hold (DynamicQuantizeLinear's three outputs,
// MatMulInteger with a run-time zero point) export as themselves and import back to the same
// outputs.
TEST(OnnxImport, GenericIntegerOpsRoundTrip) {
  Graph g;
  g.name = "integer";
  g.inputs = {ValueInfo{"x", DType::F32, {-1, 6}, {"batch", ""}}};
  g.initializers["w"] = testing::random_bytes({6, 5}, 4);
  Tensor wz(DType::U8, {});
  wz.data<uint8_t>()[0] = 131;
  g.initializers["wz"] = wz;
  g.add_node(Node{"q", "DynamicQuantizeLinear", {"x"}, {"xq", "xs", "xz"}});
  g.add_node(Node{"mm", "MatMulInteger", {"xq", "w", "xz", "wz"}, {"acc"}});
  g.add_node(Node{"f", "Cast", {"acc"}, {"y"}, {{"to", "f32"}}});
  g.outputs = {"y", "xs"};
  g.validate();
  const Graph back = import_onnx_bytes(export_onnx_bytes(g, {}).bytes, "back.onnx", "");
  Tensor x(DType::F32, {3, 6});
  Rng rng(8);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-2.0f, 3.0f);
  Executor a(g), b(back);
  a.input("x") = x;
  b.input("x") = x;
  a.forward();
  b.forward();
  for (const char* out : {"y", "xs"}) {
    ASSERT_EQ(a.value(out).shape(), b.value(out).shape()) << out;
    EXPECT_EQ(std::memcmp(a.value(out).raw(), b.value(out).raw(), a.value(out).nbytes()), 0) << out;
  }
}

// ONNX Runtime's quantize_dynamic models: every DynamicQuantizeLinear -> MatMulInteger /
// ConvInteger -> Cast -> Mul (-> Add, Relu) becomes one DynamicQDense / DynamicQConv2D (per-tensor
// activations, as DynamicQuantizeLinear quantizes), none of the generic integer ops is left, and
// the classes agree with ONNX Runtime's.
TEST(OnnxImport, OnnxRuntimeDynamicModelsRunOnTheIntegerLayers) {
  const DatasetSplits data = load_dataset_dir(testing::test_dataset_dir());
  for (const std::string name : {"mlp_dynamic", "cnn_dynamic"}) {
    SCOPED_TRACE(name);
    const Graph g = import_onnx(data_dir() + name + ".onnx");
    int integer = 0;
    for (const auto& n : g.nodes) {
      for (const char* generic : {"Dense", "Conv2D", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "Cast", "Mul", "Add"})
        EXPECT_NE(n.op, generic);
      if (n.op == "DynamicQDense" || n.op == "DynamicQConv2D") {
        ++integer;
        EXPECT_EQ(n.attr_string("granularity", ""), "tensor");
      }
    }
    EXPECT_EQ(integer, name[0] == 'm' ? 3 : 4);
    EXPECT_GE(agreement_with_ort(name, predict_classes(g, data.test)), 9950);
  }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// ONNX Runtime's quantize_static models (QDQ and QOperator; uint8 activations, int8 weights) run
// on lowbit's integer layers: no float Dense or Conv2D is left, and the classes are ORT's. (ORT's
// stored classes come from its fused u8 x s8 kernels, which on CPUs without AVX-512 VNNI saturate
// 16-bit pair sums: the CNN's differ from the exact QDQ arithmetic, which lowbit computes, on 1.3%
// of the images; the MLP's on 0.01%. So lowbit is also held to the exact arithmetic: ORT's classes
// for the QDQ files with its optimizations off, and the QOperator file of the same model.)
TEST(OnnxImport, OnnxRuntimeQuantizedModelsRunOnTheIntegerLayers) {
  const DatasetSplits data = load_dataset_dir(testing::test_dataset_dir());
  std::map<std::string, std::vector<int32_t>> classes;
  for (const std::string name : {"mlp_qdq", "mlp_qop", "cnn_qdq", "cnn_qop"}) {
    SCOPED_TRACE(name);
    const Graph g = import_onnx(data_dir() + name + ".onnx");
    int integer = 0;
    for (const auto& n : g.nodes) {
      EXPECT_NE(n.op, "Dense");
      EXPECT_NE(n.op, "Conv2D");
      integer += traits_of(n).is_integer_layer();
    }
    EXPECT_EQ(integer, name[0] == 'm' ? 3 : 4);
    const std::vector<int32_t> ours = predict_classes(g, data.test);
    EXPECT_GE(agreement_with_ort(name, ours), name[0] == 'm' ? 9990 : 9800);
    if (name.ends_with("_qdq")) {
      const Tensor exact = read_npy(data_dir() + name + ".exact_classes.npy");
      int64_t same = 0;
      for (int64_t i = 0; i < 10000; ++i) same += ours[i] == exact.data<uint8_t>()[i];
      std::printf("%s: %lld of 10000 classes as ONNX Runtime's op-by-op QDQ arithmetic\n", name.c_str(), static_cast<long long>(same));
      EXPECT_GE(same, 9990);
    } else {
      EXPECT_EQ(ours, classes.at(name.substr(0, name.size() - 3) + "qdq")) << "the QOperator and QDQ files of one model";
    }
    classes[name] = ours;
  }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

Tensor uniform(Shape shape, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Tensor t(DType::F32, std::move(shape));
  testing::fill_uniform(t, seed, lo, hi);
  return t;
}

// The first output of a one-input graph run on x.
Tensor output_of(const Graph& g, const Tensor& x) {
  Executor run(g);
  run.input(g.inputs[0].name) = x;
  run.forward();
  return run.value(g.outputs[0]).clone();
}

// LayerNorm spelled out of primitives (as PyTorch exports it before opset 17, and as hand-written
// BERTs do): the importer fuses it into one LayerNormalization node, whose outputs match the
// spelled-out graph's within 1e-6 relative. Both spellings of the square and of the division.
TEST(OnnxImport, LayerNormSpelledOutOfPrimitivesIsFused) {
  for (bool reciprocal : {false, true}) {
    Graph g;
    g.inputs.push_back({"x", DType::F32, {-1, 5, 16}});
    g.initializers = {{"eps", testing::scalar_f32(1e-5f)}, {"two", testing::scalar_f32(2.0f)}, {"gamma", uniform({16}, 1)},
                      {"beta", uniform({16}, 2)}};
    const Attributes last_axis = {{"axes", std::vector<int64_t>{-1}}, {"keepdims", int64_t{1}}};
    g.add_node({"mean", "ReduceMean", {"x"}, {"m"}, last_axis});
    g.add_node({"center", "Sub", {"x", "m"}, {"d"}});
    if (reciprocal)
      g.add_node({"square", "Mul", {"d", "d"}, {"p"}});
    else
      g.add_node({"square", "Pow", {"d", "two"}, {"p"}});
    g.add_node({"var", "ReduceMean", {"p"}, {"v"}, last_axis});
    g.add_node({"add_eps", "Add", {"v", "eps"}, {"e"}});
    g.add_node({"std", "Sqrt", {"e"}, {"s"}});
    if (reciprocal) {
      g.add_node({"inv", "Reciprocal", {"s"}, {"r"}});
      g.add_node({"norm", "Mul", {"d", "r"}, {"n"}});
    } else {
      g.add_node({"norm", "Div", {"d", "s"}, {"n"}});
    }
    g.add_node({"scale", "Mul", {"n", "gamma"}, {"y"}});
    g.add_node({"shift", "Add", {"y", "beta"}, {"z"}});
    g.outputs = {"z"};
    g.validate();
    const Graph back = import_onnx_bytes(export_onnx_bytes(g, {}).bytes, "ln.onnx", "");
    int fused = 0, primitives = 0;
    for (const auto& n : back.nodes) {
      fused += n.op == "LayerNormalization";
      primitives += n.op == "ReduceMean" || n.op == "Sqrt" || n.op == "Sub";
    }
    EXPECT_EQ(fused, 1) << (reciprocal ? "reciprocal" : "division");
    EXPECT_EQ(primitives, 0);
    const Tensor x = uniform({3, 5, 16}, 3, -4.0f, 6.0f);
    const Tensor ya = output_of(g, x), yb = output_of(back, x);
    ASSERT_EQ(ya.shape(), yb.shape());
    double worst = 0, largest = 0;
    for (int64_t i = 0; i < ya.numel(); ++i) {
      worst = std::max(worst, std::fabs(double(ya.data<float>()[i]) - yb.data<float>()[i]));
      largest = std::max(largest, std::fabs(double(ya.data<float>()[i])));
    }
    EXPECT_LE(worst, 1e-6 * largest) << (reciprocal ? "reciprocal" : "division");
  }
}

// GELU spelled out (PyTorch before opset 20: x / sqrt 2, Erf, + 1, * x, * 0.5) becomes one Gelu.
TEST(OnnxImport, GeluSpelledOutIsFused) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 8}});
  g.initializers = {{"sqrt2", testing::scalar_f32(1.4142135381698608f)}, {"one", testing::scalar_f32(1.0f)},
                    {"half", testing::scalar_f32(0.5f)}};
  g.add_node({"div", "Div", {"x", "sqrt2"}, {"a"}});
  g.add_node({"erf", "Erf", {"a"}, {"b"}});
  g.add_node({"add", "Add", {"b", "one"}, {"c"}});
  g.add_node({"mul", "Mul", {"x", "c"}, {"d"}});
  g.add_node({"half_mul", "Mul", {"d", "half"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  const Graph back = import_onnx_bytes(export_onnx_bytes(g, {}).bytes, "gelu.onnx", "");
  ASSERT_EQ(back.nodes.size(), 1u);
  EXPECT_EQ(back.nodes[0].op, "Gelu");
  const Tensor x = uniform({4, 8}, 5, -5.0f, 5.0f);
  const Tensor ya = output_of(g, x), yb = output_of(back, x);
  for (int64_t i = 0; i < x.numel(); ++i)
    EXPECT_NEAR(ya.data<float>()[i], yb.data<float>()[i], 1e-6 * (1 + std::fabs(ya.data<float>()[i])));
}

// A BERT encoder from HF transformers, exported by PyTorch at opset 14 (tests/onnx/make_bert.py):
// it imports with its LayerNorms and GELUs fused and its biases in the Dense layers, runs with other
// batch and sequence sizes than it was exported with (dynamic axes, a padded attention mask), and
// matches PyTorch's outputs within 1e-4 relative (max |got - want| / max |want|).
TEST(OnnxImport, TinyBertMatchesPyTorch) {
  const Graph g = import_onnx(data_dir() + "bert_tiny.onnx");
  std::map<std::string, int> ops;
  for (const auto& n : g.nodes) ++ops[n.op];
  EXPECT_EQ(ops["LayerNormalization"], 5);  // embeddings + 2 per layer
  EXPECT_EQ(ops["Gelu"], 2);
  EXPECT_EQ(ops["Dense"], 13);  // q, k, v, output, intermediate, output per layer, the pooler
  EXPECT_EQ(ops["ReduceMean"] + ops["Erf"] + ops["Sqrt"], 0);
  EXPECT_EQ(ops["Attention"], 2);  // one per layer, with the padding mask
  EXPECT_EQ(ops["Softmax"] + ops["Transpose"] + ops["MatMul"], 0);
  for (int set = 0; set < 2; ++set) {
    SCOPED_TRACE("input set " + std::to_string(set));
    Executor run(g);
    for (auto& [name, tensor] : read_npz(data_dir() + "bert_tiny.inputs" + std::to_string(set) + ".npz")) run.input(name) = tensor;
    run.forward();
    for (auto& [name, want] : read_npz(data_dir() + "bert_tiny.outputs" + std::to_string(set) + ".npz")) {
      const Tensor& got = run.value(name);
      ASSERT_EQ(got.shape(), want.shape()) << name;
      double diff = 0, scale = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        diff = std::max(diff, std::fabs(double(got.data<float>()[i]) - want.data<float>()[i]));
        scale = std::max(scale, std::fabs(double(want.data<float>()[i])));
      }
      EXPECT_LE(diff, 1e-4 * scale) << name;
    }
  }
}

// The vision transformer of tests/onnx/make_vit.py (examples/models/vit-tiny.json's layer types at
// width 32, two blocks; PyTorch's multi-head attention written as HF transformers writes it):
// attention, LayerNorm and GELU fused, the logits within 1e-4 of PyTorch's.
TEST(OnnxImport, TinyVitMatchesPyTorch) {
  const Graph g = import_onnx(data_dir() + "vit_tiny.onnx");
  std::map<std::string, int> ops;
  for (const auto& n : g.nodes) ++ops[n.op];
  EXPECT_EQ(ops["Attention"], 2);
  EXPECT_EQ(ops["LayerNormalization"], 5);
  EXPECT_EQ(ops["Gelu"], 2);
  EXPECT_EQ(ops["Softmax"] + ops["MatMul"] + ops["Erf"], 0);
  Executor run(g);
  run.input("image") = read_npz(data_dir() + "vit_tiny.inputs0.npz").at(0).tensor;
  run.forward();
  const Tensor want = read_npz(data_dir() + "vit_tiny.outputs0.npz").at(0).tensor;
  const Tensor& got = run.value("logits");
  ASSERT_EQ(got.shape(), want.shape());
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    diff = std::max(diff, std::fabs(double(got.data<float>()[i]) - want.data<float>()[i]));
    scale = std::max(scale, std::fabs(double(want.data<float>()[i])));
  }
  EXPECT_LE(diff, 1e-4 * scale);
}

// A mean over an axis that is not trailing, or a value read outside the pattern, is left alone.
TEST(OnnxImport, LayerNormLookalikesAreNotFused) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {4, 8}});
  g.initializers = {{"eps", testing::scalar_f32(1e-5f)}};
  const Attributes first_axis = {{"axes", std::vector<int64_t>{0}}, {"keepdims", int64_t{1}}};
  g.add_node({"mean", "ReduceMean", {"x"}, {"m"}, first_axis});
  g.add_node({"center", "Sub", {"x", "m"}, {"d"}});
  g.add_node({"square", "Mul", {"d", "d"}, {"p"}});
  g.add_node({"var", "ReduceMean", {"p"}, {"v"}, first_axis});
  g.add_node({"add_eps", "Add", {"v", "eps"}, {"e"}});
  g.add_node({"std", "Sqrt", {"e"}, {"s"}});
  g.add_node({"norm", "Div", {"d", "s"}, {"n"}});
  g.outputs = {"n"};
  g.validate();
  const Graph back = import_onnx_bytes(export_onnx_bytes(g, {}).bytes, "ln.onnx", "");
  for (const auto& n : back.nodes) EXPECT_NE(n.op, "LayerNormalization");
}

// Multi-head attention spelled out (heads split by Reshape + Transpose, scaled and masked scores,
// Softmax, values, heads merged) becomes one Attention node after an ONNX round trip, with the
// same outputs; with the probabilities also a graph output it stays unfused.
Graph spelled_out_attention(bool probabilities_out) {
  Graph g;
  g.inputs = {{"q", DType::F32, {2, 5, 12}}, {"k", DType::F32, {2, 7, 12}}, {"v", DType::F32, {2, 7, 6}},
              {"mask", DType::F32, {2, 1, 1, 7}}};
  g.initializers = {{"c", testing::scalar_f32(2.0f)}};
  auto split = [&](const std::string& x, Shape perm) {
    g.add_node({x + "_r", "Reshape", {x}, {x + "_r"}, {{"dims", Shape{0, 0, 3, -1}}}});
    g.add_node({x + "_t", "Transpose", {x + "_r"}, {x + "_t"}, {{"perm", perm}}});
  };
  split("q", {0, 2, 1, 3});
  split("k", {0, 2, 3, 1});
  split("v", {0, 2, 1, 3});
  g.add_node({"scores", "MatMul", {"q_t", "k_t"}, {"s"}});
  g.add_node({"scale", "Div", {"s", "c"}, {"s2"}});
  g.add_node({"masked", "Add", {"s2", "mask"}, {"s3"}});
  g.add_node({"softmax", "Softmax", {"s3"}, {"p"}, {{"axis", -1}}});
  g.add_node({"values", "MatMul", {"p", "v_t"}, {"o"}});
  g.add_node({"merge_t", "Transpose", {"o"}, {"o_t"}, {{"perm", Shape{0, 2, 1, 3}}}});
  g.add_node({"merge", "Reshape", {"o_t"}, {"y"}, {{"dims", Shape{0, 0, -1}}}});
  g.outputs = {"y"};
  if (probabilities_out) g.outputs.push_back("p");
  g.validate();
  return g;
}

TEST(OnnxImport, SpelledOutAttentionIsFusedAndExportsBack) {
  const Graph plain = spelled_out_attention(false);
  const Graph fused = import_onnx_bytes(export_onnx_bytes(plain, {}).bytes, "attention.onnx", "");
  ASSERT_EQ(fused.nodes.size(), 1u);
  EXPECT_EQ(fused.nodes[0].op, "Attention");
  EXPECT_EQ(fused.nodes[0].attr_int("num_heads", 0), 3);
  EXPECT_FLOAT_EQ(static_cast<float>(fused.nodes[0].attr_float("scale", 0)), 0.5f);
  // The fused graph exported (as the pattern) and imported again is fused again.
  const Graph again = import_onnx_bytes(export_onnx_bytes(fused, {}).bytes, "again.onnx", "");
  ASSERT_EQ(again.nodes.size(), 1u);
  EXPECT_EQ(again.nodes[0].op, "Attention");
  std::map<std::string, Tensor> in = {{"q", testing::random({2, 5, 12}, 1)}, {"k", testing::random({2, 7, 12}, 2)},
                                      {"v", testing::random({2, 7, 6}, 3)}, {"mask", Tensor(DType::F32, {2, 1, 1, 7})}};
  in["mask"].zero();
  in["mask"].data<float>()[13] = -10000.0f;  // the second sample's last key is padding
  Executor a(plain), b(fused), c(again);
  for (auto& [name, t] : in) a.input(name) = t, b.input(name) = t, c.input(name) = t;
  a.forward(), b.forward(), c.forward();
  const Tensor &want = a.value("y"), &got = b.value("y"), &round = c.value("y");
  ASSERT_EQ(got.shape(), want.shape());
  for (int64_t i = 0; i < want.numel(); ++i) {
    EXPECT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-6 * (1 + std::fabs(want.data<float>()[i])));
    EXPECT_EQ(round.data<float>()[i], got.data<float>()[i]);
  }
  const Graph kept = import_onnx_bytes(export_onnx_bytes(spelled_out_attention(true), {}).bytes, "kept.onnx", "");
  for (const auto& n : kept.nodes) EXPECT_NE(n.op, "Attention");
}

}  // namespace
}  // namespace lowbit
