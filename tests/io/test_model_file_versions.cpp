// Format versions: files written by lowbit before format version 2 (tests/data/format-v1, made by
// commit 944bba0's CLI; see the README there) load and compute what they computed then; op
// versions recorded per node are checked against what this build knows.
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <functional>

#include "test_util.h"

namespace lowbit {
namespace {

const std::string kV1 = LOWBIT_SOURCE_DIR "/tests/data/format-v1/";

// The 16 synthetic images of make_expected.cpp, scaled as the model's metadata says.
Tensor synthetic_images(const Graph& g) {
  const float scale = input_scale(g);
  Tensor x(DType::F32, {16, 28, 28});
  float* p = x.data<float>();
  for (int64_t i = 0; i < 16 * 784; ++i)
    p[i] = static_cast<float>(static_cast<uint8_t>((i * 131 + (i / 784) * 17) % 256)) * scale;
  return x;
}

uint32_t u32_at(const std::string& bytes, size_t offset) {
  uint32_t v;
  std::memcpy(&v, bytes.data() + offset, 4);
  return v;
}

TEST(ModelFileVersions, VersionOneFilesLoadAndComputeWhatTheyDidWhenWritten) {
  int checked = 0;
  for (const char* name : {"mlp-f32", "mlp-int8", "mlp-dynamic", "mlp-w4", "cnn-f32", "cnn-int8"}) {
    SCOPED_TRACE(name);
    const std::string path = kV1 + name + ".lbm";
    ASSERT_EQ(u32_at(testing::read_bytes(path), 8), 1u) << "test data must stay format version 1";
    const Graph g = load_model(path);
    const std::string expected_bytes = testing::read_bytes(path + ".expected");
    Executor run(g);
    run.input(g.inputs[0].name) = synthetic_images(g);
    run.forward();
    const Tensor& y = run.value(g.outputs[0]);
    ASSERT_EQ(y.nbytes(), expected_bytes.size());
    const float* expected = reinterpret_cast<const float*>(expected_bytes.data());
    // Integer models are bit-exact on every ISA; float models agree to the GEMM's rounding.
    const bool integer = std::string(name).find("f32") == std::string::npos;
    for (int64_t i = 0; i < y.numel(); ++i) {
      if (integer)
        ASSERT_EQ(y.data<float>()[i], expected[i]) << "output " << i;
      else
        ASSERT_NEAR(y.data<float>()[i], expected[i], 1e-5) << "output " << i;
    }
    // Saved again, the model is format version 2 and loads back to the same graph.
    const std::string v2 = serialize_model(g);
    EXPECT_EQ(u32_at(v2, 8), kModelFormatVersion);
    EXPECT_EQ(serialize_model(deserialize_model(v2, "again.lbm")), v2);
    ++checked;
  }
  EXPECT_EQ(checked, 6);
}

// Rewrites the GRPH section of a serialized model through `edit`, fixing its size and CRC.
std::string with_graph_json(const std::string& bytes, const std::function<void(std::string&)>& edit) {
  const size_t header = 16, section = 24;
  uint64_t size;
  std::memcpy(&size, bytes.data() + header + 8, 8);
  std::string json = bytes.substr(header + section, size);
  edit(json);
  std::string out = bytes.substr(0, header + section) + json + bytes.substr(header + section + size);
  const uint64_t new_size = json.size();
  const uint32_t crc = static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(json.data()), static_cast<uInt>(json.size())));
  std::memcpy(out.data() + header + 8, &new_size, 8);
  std::memcpy(out.data() + header + 16, &crc, 4);
  return out;
}

void replace_first(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
}

TEST(ModelFileVersions, NodesRecordTheirOpVersionAndNewerOnesAreRefused) {
  const Graph g = build_model(parse_arch("12-5-3"), {3, 4}, 3, 9);
  const std::string bytes = serialize_model(g);
  EXPECT_NE(bytes.find("\"op\":\"Dense\",\"version\":1"), std::string::npos);
  const std::string newer = with_graph_json(bytes, [](std::string& j) { replace_first(j, "\"op\":\"Dense\",\"version\":1", "\"op\":\"Dense\",\"version\":7"); });
  EXPECT_LOWBIT_ERROR(deserialize_model(newer, "newer.lbm"),
                      "'newer.lbm': node 'dense_1' (Dense) is op version 7; this build of lowbit knows Dense up to version 1");
  const std::string zero = with_graph_json(bytes, [](std::string& j) { replace_first(j, "\"version\":1", "\"version\":0"); });
  EXPECT_LOWBIT_ERROR(deserialize_model(zero, "zero.lbm"), "'zero.lbm': section GRPH: node 'image_scale' has op version 0");
  const std::string missing = with_graph_json(bytes, [](std::string& j) { replace_first(j, ",\"version\":1", ""); });
  EXPECT_LOWBIT_ERROR(deserialize_model(missing, "missing.lbm"), "'missing.lbm': section GRPH: malformed graph description");
}

TEST(ModelFileVersions, NamedDynamicDimensionsAndNewDtypesRoundTrip) {
  Graph g;
  g.inputs.push_back({"tokens", DType::F32, {-1, -1, 8}, {"batch", "sequence", ""}});
  g.initializers["w"] = Tensor(DType::F32, {4, 8});
  g.initializers["ids"] = Tensor(DType::S64, {3});
  g.initializers["ids"].data<int64_t>()[2] = -(int64_t{1} << 40);
  g.initializers["half"] = cast(Tensor::from_vector({2}, std::vector<float>{0.5f, -2.0f}), DType::F16);
  g.initializers["mask"] = Tensor(DType::Bool, {2});
  g.add_node({"proj", "Dense", {"tokens", "w"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  const Graph back = deserialize_model(serialize_model(g), "m.lbm");
  EXPECT_EQ(back.inputs[0].symbols, (std::vector<std::string>{"batch", "sequence", ""}));
  EXPECT_EQ(back.initializers.at("ids").data<int64_t>()[2], -(int64_t{1} << 40));
  EXPECT_EQ(back.initializers.at("half").dtype(), DType::F16);
  EXPECT_EQ(cast(back.initializers.at("half"), DType::F32).data<float>()[1], -2.0f);
  EXPECT_EQ(back.initializers.at("mask").dtype(), DType::Bool);
  EXPECT_EQ(back.infer_shapes().at("y").shape, (Shape{-1, -1, 4}));
}

}  // namespace
}  // namespace lowbit
