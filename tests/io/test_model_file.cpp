#include <zlib.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::TempDir;

Graph trained_like_model() {
  Graph g = build_model(parse_arch("12-5-3"), {3, 4}, 3, 9);
  g.metadata["note"] = "test";
  return g;
}

void put_u32(std::string& bytes, size_t offset, uint32_t v) { std::memcpy(bytes.data() + offset, &v, 4); }

TEST(ModelFile, RoundTripPreservesEverything) {
  TempDir dir;
  Graph g = trained_like_model();
  save_model(g, dir.file("m.lbm"));
  Graph back = load_model(dir.file("m.lbm"));
  EXPECT_EQ(back.name, g.name);
  EXPECT_EQ(back.metadata, g.metadata);
  ASSERT_EQ(back.nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    EXPECT_EQ(back.nodes[i].name, g.nodes[i].name);
    EXPECT_EQ(back.nodes[i].attributes, g.nodes[i].attributes);
  }
  ASSERT_EQ(back.initializers.size(), g.initializers.size());
  for (const auto& [name, t] : g.initializers) {
    const Tensor& b = back.initializers.at(name);
    EXPECT_EQ(b.shape(), t.shape());
    EXPECT_EQ(std::memcmp(b.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  EXPECT_EQ(serialize_model(back), serialize_model(g));
}

TEST(ModelFile, EveryTruncationIsAClearError) {
  const std::string bytes = serialize_model(trained_like_model());
  for (size_t cut = 0; cut < bytes.size(); cut += (cut < 200 ? 1 : 97)) {
    try {
      deserialize_model(std::string_view(bytes).substr(0, cut), "cut.lbm");
      ADD_FAILURE() << "truncation at " << cut << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cut.lbm"), std::string::npos) << e.what();
    }
  }
}

TEST(ModelFile, CorruptedBytesFailTheChecksum) {
  const std::string good = serialize_model(trained_like_model());
  for (size_t at : {size_t{40}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[at] ^= 0x20;
    EXPECT_LOWBIT_ERROR(deserialize_model(bad, "bad.lbm"), "CRC-32");
  }
}

TEST(ModelFile, NewerVersionIsRefusedByName) {
  std::string bytes = serialize_model(trained_like_model());
  put_u32(bytes, 8, kModelFormatVersion + 1);
  EXPECT_LOWBIT_ERROR(deserialize_model(bytes, "new.lbm"), "newer lowbit");
}

TEST(ModelFile, ForeignFilesAreNotModels) {
  EXPECT_LOWBIT_ERROR(deserialize_model("PK\x03\x04 a zip file, not a model", "x.zip"), "is not a lowbit model file");
  EXPECT_LOWBIT_ERROR(deserialize_model("", "empty"), "is not a lowbit model file");
  TempDir dir;
  EXPECT_LOWBIT_ERROR(load_model(dir.file("absent.lbm")), "cannot open");
}

std::string with_extra_section(std::string bytes, const char* tag, uint32_t flags) {
  uint32_t count;
  std::memcpy(&count, bytes.data() + 12, 4);
  put_u32(bytes, 12, count + 1);
  std::string payload = "future data";
  std::string header(24, '\0');
  std::memcpy(header.data(), tag, 4);
  put_u32(header, 4, flags);
  uint64_t size = payload.size();
  std::memcpy(header.data() + 8, &size, 8);
  put_u32(header, 16, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(payload.data()), payload.size())));
  return bytes + header + payload;
}

TEST(ModelFile, UnknownSectionsAreSkippedUnlessRequired) {
  const std::string bytes = serialize_model(trained_like_model());
  Graph g = deserialize_model(with_extra_section(bytes, "XTRA", 0), "optional.lbm");
  EXPECT_EQ(g.nodes.size(), trained_like_model().nodes.size());
  EXPECT_LOWBIT_ERROR(deserialize_model(with_extra_section(bytes, "XTRA", 1), "required.lbm"),
                      "required section XTRA is unknown");
}

// The file with its GRPH section's JSON replaced by edit(JSON) (size and CRC fixed up).
template <typename F>
std::string with_graph_json(const std::string& bytes, F edit) {
  size_t at = 16;
  while (bytes.compare(at, 4, "GRPH") != 0) {
    uint64_t size;
    std::memcpy(&size, bytes.data() + at + 8, 8);
    at += 24 + size;
  }
  uint64_t size;
  std::memcpy(&size, bytes.data() + at + 8, 8);
  nlohmann::json j = nlohmann::json::parse(bytes.substr(at + 24, size));
  edit(j);
  const std::string payload = j.dump();
  std::string header = bytes.substr(at, 24);
  const uint64_t new_size = payload.size();
  std::memcpy(header.data() + 8, &new_size, 8);
  put_u32(header, 16, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(payload.data()), payload.size())));
  return bytes.substr(0, at) + header + payload + bytes.substr(at + 24 + size);
}

// Attributes of every kind keep their kind and value through a file; JSON that is none of the
// kinds is refused naming the node and the attribute.
TEST(ModelFile, AttributesOfEveryKindRoundTrip) {
  Graph g = trained_like_model();
  Attributes& a = g.nodes[1].attributes;
  a["i"] = -3;
  a["f"] = 2.0;  // stays a float although integral
  a["s"] = "text \"quoted\"";
  a["ints"] = {4, -1};
  a["no_ints"] = std::vector<int64_t>{};
  a["floats"] = std::vector<double>{0.5, 1e-7, 3.0};
  a["strings"] = std::vector<std::string>{"a", ""};
  const Graph back = deserialize_model(serialize_model(g), "kinds.lbm");
  EXPECT_EQ(back.nodes[1].attributes, a);
  EXPECT_EQ(back.nodes[1].attributes.at("f").kind(), Attribute::Kind::Float);
  EXPECT_EQ(back.nodes[1].attributes.at("floats").kind(), Attribute::Kind::Floats);
  EXPECT_EQ(serialize_model(back), serialize_model(g));

  const std::string bytes = serialize_model(trained_like_model());
  const std::string name = trained_like_model().nodes[1].name;
  for (const char* bad : {R"({"x": 1})", "null", R"([1, "a"])", "18446744073709551615"}) {
    const std::string edited =
        with_graph_json(bytes, [&](nlohmann::json& j) { j["nodes"][1]["attributes"]["odd"] = nlohmann::json::parse(bad); });
    EXPECT_LOWBIT_ERROR(deserialize_model(edited, "odd.lbm"),
                        "odd.lbm': section GRPH: node '" + name + "': attribute 'odd' must be a number, a string or a list");
  }
}

TEST(ModelFile, SaveIsAtomicAndLeavesNoTemporaryFiles) {
  TempDir dir;
  save_model(trained_like_model(), dir.file("m.lbm"));
  save_model(trained_like_model(), dir.file("m.lbm"));
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) ++files, (void)entry;
  EXPECT_EQ(files, 1);
  EXPECT_LOWBIT_ERROR(save_model(trained_like_model(), dir.file("no/such/dir/m.lbm")), "cannot write");
}

TEST(ModelFile, InvalidGraphInsideAValidFileIsReported) {
  Graph g = trained_like_model();
  g.initializers["dense_1.weight"] = Tensor::zeros({5, 11});  // wrong input width
  EXPECT_LOWBIT_ERROR(deserialize_model(serialize_model(g), "shape.lbm"), "shape.lbm': invalid graph: node 'dense_1'");
}

TEST(ModelDescription, ReferenceFileBuildsTheReferenceMlp) {
  ModelDescription d = parse_arch(LOWBIT_SOURCE_DIR "/examples/models/reference-mlp.json");
  Graph g = build_model(d, {28, 28}, 10, 0);
  EXPECT_EQ(g.parameter_count(), 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10);
  Graph same = build_model(parse_arch("784-64-32-10"), {28, 28}, 10, 0);
  for (const auto& [name, t] : g.initializers)
    EXPECT_EQ(std::memcmp(t.raw(), same.initializers.at(name).raw(), t.nbytes()), 0) << name;
}

// A described model takes the image bytes and scales them itself (a Constant and a
// DequantizeLinear), so its file computes the whole function; "dtype": "f32" keeps a float input
// scaled by the caller, as models made before it were.
TEST(ModelDescription, TheModelScalesTheImageBytesItself) {
  const Graph g = build_model(parse_arch("12-5-3"), {3, 4}, 3, 9);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(g.inputs[0].dtype, DType::U8);
  EXPECT_EQ(g.nodes[0].op, "Constant");
  EXPECT_EQ(g.nodes[0].attr_float("value_float", 0.0), static_cast<double>(std::stof("0.003922")));  // 1/255, as always applied
  EXPECT_EQ(g.nodes[1].op, "DequantizeLinear");
  EXPECT_EQ(g.nodes[1].inputs, (std::vector<std::string>{"image", "image_scale"}));
  EXPECT_EQ(g.nodes[2].inputs, (std::vector<std::string>{"image_scaled"}));  // the first layer reads the scaled image
  EXPECT_FALSE(g.metadata.count("input_scale"));
  // The scaled values are bytes times the scale, exactly as a float-input model's batches were made.
  const Tensor bytes = testing::random_bytes({2, 3, 4}, 5);
  Executor run(g);
  run.input("image") = bytes;
  run.forward();
  const float scale = std::stof("0.003922");
  for (int64_t i = 0; i < bytes.numel(); ++i)
    ASSERT_EQ(run.value("image_scaled").data<float>()[i], static_cast<float>(bytes.data<uint8_t>()[i]) * scale) << i;
  // A description naming the input (a DAG) reads the scaled image too; a scale of its own.
  const Graph dag = build_model({R"({"input": {"scale": 0.5}, "layers": [{"type": "flatten", "inputs": ["image"]},
      {"type": "dense", "units": 3}]})"}, {3, 4}, 3, 0);
  EXPECT_EQ(dag.nodes[2].inputs, (std::vector<std::string>{"image_scaled"}));
  EXPECT_EQ(dag.nodes[0].attr_float("value_float", 0.0), 0.5);
  // dtype f32: a float input, the first layer reads it, the scale in the metadata.
  const Graph f = build_model({R"({"input": {"dtype": "f32"}, "layers": [{"type": "flatten"}, {"type": "dense", "units": 3}]})"},
                              {3, 4}, 3, 0);
  EXPECT_EQ(f.inputs[0].dtype, DType::F32);
  EXPECT_EQ(f.nodes[0].op, "Flatten");
  EXPECT_EQ(f.metadata.at("input_scale"), "0.003922");
  // The same seed gives the same weights either way.
  for (const auto& [name, t] : f.initializers)
    EXPECT_EQ(std::memcmp(t.raw(), dag.initializers.at(name).raw(), t.nbytes()), 0) << name;
  EXPECT_LOWBIT_ERROR(build_model({R"({"input": {"dtype": "f16"}, "layers": [{"type": "flatten"}]})"}, {3, 4}, 3, 0),
                      "model description: input: field 'dtype' must be \"u8\"");
  EXPECT_LOWBIT_ERROR(build_model({R"({"input": {"scale": -1}, "layers": [{"type": "flatten"}]})"}, {3, 4}, 3, 0),
                      "scale -1.000000 must be positive");
  EXPECT_LOWBIT_ERROR(build_model({R"({"layers": [{"type": "flatten", "inputs": ["image_scale"]}]})"}, {3, 4}, 3, 0),
                      "input 'image_scale' is not the input or an earlier layer");
  EXPECT_LOWBIT_ERROR(build_model({R"({"layers": [{"type": "flatten", "name": "image_scaled"}]})"}, {3, 4}, 3, 0),
                      "name 'image_scaled' is used twice");
}

// examples/models/vit-tiny.json: 16 tokens of 7x7 patches, width 64, four pre-norm blocks; the
// patches layer orders the pixels of each patch row by row, patches row by row.
TEST(ModelDescription, VitTinyBuildsATransformer) {
  const Graph g = build_model(parse_arch(LOWBIT_SOURCE_DIR "/examples/models/vit-tiny.json"), {28, 28}, 10, 0);
  std::map<std::string, int> ops;
  for (const auto& n : g.nodes) ++ops[n.op];
  EXPECT_EQ(ops["Attention"], 4);
  EXPECT_EQ(ops["LayerNormalization"], 9);
  EXPECT_EQ(ops["Gelu"], 4);
  const int64_t block = 2 * 64 * 2 + 4 * (64 * 64 + 64) + (64 * 128 + 128) + (128 * 64 + 64);
  EXPECT_EQ(g.parameter_count(), (49 * 64 + 64) + 16 * 64 + 4 * block + 2 * 64 + (64 * 10 + 10));
  EXPECT_EQ(g.infer_shapes().at("patches_1").shape, (Shape{-1, 16, 49}));
  Tensor image(DType::U8, {1, 28, 28});
  for (int64_t i = 0; i < image.numel(); ++i) image.data<uint8_t>()[i] = static_cast<uint8_t>(i % 251);
  Executor run(g);
  run.input("image") = image;
  run.forward();
  const Tensor& tokens = run.value("patches_1");
  for (int64_t p = 0; p < 16; ++p)
    for (int64_t k = 0; k < 49; ++k) {
      const int64_t row = p / 4 * 7 + k / 7, col = p % 4 * 7 + k % 7;
      ASSERT_EQ(tokens.data<float>()[p * 49 + k], run.value("image_scaled").data<float>()[row * 28 + col]) << p << " " << k;
    }
  EXPECT_EQ(run.value(g.outputs[0]).shape(), (Shape{1, 10}));
}

TEST(ModelDescription, ParametersBeyondTheLimitAreRefusedBeforeAllocating) {
  // 784 x 2 000 000 f32 weights = 6.3 GB: beyond the default 4 GiB, refused naming the layer.
  EXPECT_LOWBIT_ERROR(build_model(parse_arch("784-2000000-10"), {28, 28}, 10, 0),
                      "dense_1: a parameter of shape [2000000, 784] takes the model's parameters beyond 4294967296 bytes");
  // LOWBIT_MAX_MODEL_BYTES lowers (or raises) it; the sum of the layers counts.
  setenv("LOWBIT_MAX_MODEL_BYTES", "1000000", 1);
  EXPECT_NO_THROW(build_model(parse_arch("784-300-10"), {28, 28}, 10, 0));  // 953 KB
  EXPECT_LOWBIT_ERROR(build_model(parse_arch("784-300-300-10"), {28, 28}, 10, 0), "beyond 1000000 bytes");
  setenv("LOWBIT_MAX_MODEL_BYTES", "lots", 1);
  EXPECT_LOWBIT_ERROR(build_model(parse_arch("784-30-10"), {28, 28}, 10, 0), "LOWBIT_MAX_MODEL_BYTES must be a positive number");
  unsetenv("LOWBIT_MAX_MODEL_BYTES");
}

TEST(ModelDescription, ErrorsNameTheLayerAndField) {
  auto build = [](const char* text) { return build_model({text}, {28, 28}, 10, 0); };
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "flatten"}, {"type": "dense", "unit": 10}]})"),
                      "layers[1] (dense): unknown field 'unit'");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "flatten"}, {"type": "dense", "units": "ten"}]})"),
                      "field 'units' has the wrong type");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "dense", "units": 10}]})"), "add a flatten layer");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "conv9"}]})"), "unknown layer type 'conv9'");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "patches", "size": 7}]})"), "must be [batch, channels, height, width]");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "reshape", "shape": [1, 28, 28]}, {"type": "patches", "size": 5}]})"),
                      "patches of 5x5 do not tile the input");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "flatten"}, {"type": "attention", "heads": 2}]})"),
                      "must be [batch, tokens, width]");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "reshape", "shape": [1, 28, 28]}, {"type": "patches", "size": 7},
                                           {"type": "transformer_block", "heads": 5}]})"),
                      "layers[2] (transformer_block): field 'heads' must be a positive divisor of the width 49");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "flatten"}, {"type": "gelu", "approximate": "fast"}]})"),
                      "field 'approximate' must be");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": []})"), "non-empty array");
  EXPECT_LOWBIT_ERROR(parse_arch("no-such-file.json"), "neither layer sizes");
  // Found by the fuzzer (tests/fuzz/regressions/model_description): sizes beyond int64.
  EXPECT_LOWBIT_ERROR(parse_arch("784-99999999999999999999999-10"), "layer size 99999999999999999999999 is not a number from 1 to 2^31");
  EXPECT_LOWBIT_ERROR(build(R"({"layers": [{"type": "flatten"}, {"type": "dense", "units": 1e999}]})"), "not valid JSON");
  TempDir dir;
  testing::write_bytes(dir.file("broken.json"), "{\"layers\": [");
  EXPECT_LOWBIT_ERROR(parse_arch(dir.file("broken.json")), "broken.json': not valid JSON");
}

}  // namespace
}  // namespace lowbit
