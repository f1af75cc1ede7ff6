// Helpers shared by the tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/lowbit.h"

namespace lowbit::testing {

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "lowbit-test-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) ? pattern : throw std::runtime_error("mkdtemp failed");
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The dataset for end-to-end tests: $LOWBIT_TEST_DATA, else Debian's Fashion-MNIST.
inline std::string test_dataset_dir() {
  const char* env = std::getenv("LOWBIT_TEST_DATA");
  return env ? env : default_dataset_dir();
}

// A tensor's bytes, appended to `bytes` (bit-exactness checks compare these).
inline void append_bytes(const Tensor& t, std::vector<uint8_t>& bytes) {
  const uint8_t* p = static_cast<const uint8_t*>(t.raw());
  bytes.insert(bytes.end(), p, p + t.nbytes());
}

// Fills a tensor with uniform values in [lo, hi) from a fixed seed.
// Random image bytes (u8, uniform in 0..255): the input of the models build_model() makes.
inline Tensor random_bytes(Shape shape, uint64_t seed) {
  Tensor t(DType::U8, std::move(shape));
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(rng.below(256));
  return t;
}

// A small learnable problem: 8x8 images whose class (of 4) is the quadrant that holds a bright blob.
inline Dataset quadrant_images(int count, uint64_t seed) {
  Dataset d;
  d.images = Tensor(DType::U8, {count, 8, 8});
  d.num_classes = 4;
  Rng rng(seed);
  uint8_t* px = d.images.data<uint8_t>();
  for (int i = 0; i < count; ++i) {
    const int label = static_cast<int>(rng.below(4));
    d.labels.push_back(label);
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        px[i * 64 + y * 8 + x] = static_cast<uint8_t>((y / 4) * 2 + (x / 4) == label ? 128 + rng.below(128) : rng.below(100));
  }
  return d;
}

// A small vision transformer for quadrant_images (docs/model-description.md's transformer layers:
// 4x4 patches, position embedding, one pre-norm block with attention and a GELU MLP, mean pooling).
constexpr const char* kTinyVit = R"({"layers": [
  {"type": "reshape", "shape": [1, 8, 8]}, {"type": "patches", "size": 4}, {"type": "dense", "units": 16},
  {"type": "position_embedding"}, {"type": "transformer_block", "heads": 2, "mlp": 32}, {"type": "layernorm"},
  {"type": "mean_pool"}, {"type": "dense", "units": 4}, {"type": "softmax"}]})";

// The one output of `node`'s op run forward on `inputs` (an op test without a graph).
inline Tensor run1(const Node& node, std::vector<Tensor> inputs) {
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  Tensor y(DType::F32, {1});
  Tensor* out[] = {&y};
  find_op(node.op).forward(node, in, out);
  return y;
}
// The output shapes `node`'s op infers from input `shapes`.
inline std::vector<Shape> infer(const Node& node, std::vector<Shape> shapes) { return find_op(node.op).infer_shapes(node, shapes); }

// A scalar tensor (shape []): the form of the scales and zero points of activations.
inline Tensor scalar_f32(float v) {
  Tensor t(DType::F32, {});
  t.data<float>()[0] = v;
  return t;
}
inline Tensor scalar_s8(int v) {
  Tensor t(DType::S8, {});
  t.data<int8_t>()[0] = static_cast<int8_t>(v);
  return t;
}

inline void fill_uniform(Tensor& t, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  Rng rng(seed);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = rng.uniform(lo, hi);
}

// The instruction-set levels this CPU (and LOWBIT_ISA) allows among `wanted`, in order. Tests that
// loop over ISA levels use it so that a level the CPU lacks is skipped and said to be skipped
// (one line on stdout, once per test process), instead of the dispatcher quietly running a lower level twice.
inline std::vector<Isa> isa_levels(std::vector<Isa> wanted = {Isa::Reference, Isa::Avx2, Isa::Avx512Vnni}) {
  set_max_isa(Isa::Avx512Vnni);
  const Isa best = active_isa();
  std::vector<Isa> levels;
  static int said[3] = {};
  for (Isa isa : wanted) {
    if (isa <= best)
      levels.push_back(isa);
    else if (!said[static_cast<int>(isa)]++)  // once per level and test process
      std::printf("[ SKIPPED  ] ISA level %s: this CPU (or LOWBIT_ISA) does not have it\n", name_of(isa));
  }
  return levels;
}

// A fixture that restores the thread count and lifts the ISA cap when a test ends, whatever happens
// in it (for tests that switch paths with set_max_isa / set_num_threads).
class RuntimeSettingsTest : public ::testing::Test {
 protected:
  void SetUp() override { saved_threads_ = num_threads(); }
  void TearDown() override {
    set_num_threads(saved_threads_);
    set_max_isa(Isa::Avx512Vnni);
  }

 private:
  int saved_threads_ = 1;
};

// Expects `statement` to throw lowbit::Error whose message contains `needle`.
#define EXPECT_LOWBIT_ERROR(statement, needle)                                              \
  do {                                                                                      \
    try {                                                                                   \
      statement;                                                                            \
      ADD_FAILURE() << "expected lowbit::Error containing '" << (needle) << "'";            \
    } catch (const ::lowbit::Error& e) {                                                    \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what(); \
    }                                                                                       \
  } while (0)

}  // namespace lowbit::testing
