#include <cstring>

#include "test_util.h"

namespace lowbit {
namespace {

struct OneParameter {
  Tensor value = Tensor::from_vector({1}, std::vector<float>{1.0f});
  Tensor grad = Tensor::zeros({1});
  std::vector<Parameter> list{{"w", value, &grad}};
  float step(Optimizer& opt, float g) {
    grad.data<float>()[0] = g;
    opt.step(list);
    return value.data<float>()[0];
  }
};

TEST(Optimizer, SgdWithMomentumMatchesHandComputedSteps) {
  // v1 = -0.1*0.5 = -0.05, w1 = 0.95; v2 = 0.9*(-0.05) - 0.05 = -0.095, w2 = 0.855
  OneParameter p;
  Sgd sgd(0.1f, 0.9f);
  EXPECT_FLOAT_EQ(p.step(sgd, 0.5f), 0.95f);
  EXPECT_FLOAT_EQ(p.step(sgd, 0.5f), 0.855f);
}

TEST(Optimizer, PlainSgd) {
  OneParameter p;
  Sgd sgd(0.5f);
  EXPECT_FLOAT_EQ(p.step(sgd, 2.0f), 0.0f);
}

TEST(Optimizer, AdamMatchesHandComputedSteps) {
  // lr 0.1, Keras defaults. t=1: m_hat = g, v_hat = g^2, so the step is lr * g/(|g| + eps).
  // t=2 (g=-1): m = -0.055, v = 0.00124975, m_hat = -0.28947368, v_hat = 0.62518759.
  OneParameter p;
  Adam adam(0.1f, 0.9f, 0.999f, 1e-7f);
  EXPECT_NEAR(p.step(adam, 0.5f), 0.90000002, 1e-6);
  EXPECT_NEAR(p.step(adam, -1.0f), 0.93661037, 1e-6);
  EXPECT_NEAR(p.step(adam, 0.25f), 0.95027943, 1e-6);
}

// Data-parallel ranks that share memory each update one piece of every parameter: the pieces of
// `parts` optimizers (each with its own state) put together are one optimizer's whole steps, bit
// for bit, on awkward sizes (the vector kernels' tails fall anywhere).
TEST(Optimizer, PiecesOfAStepAreTheWholeStep) {
  for (const char* name : {"adam", "sgd"})
    for (int parts : {2, 3, 4}) {
      SCOPED_TRACE(std::string(name) + ", " + std::to_string(parts) + " parts");
      OptimizerOptions o;
      o.name = name, o.momentum = 0.9f;
      Rng rng(parts);
      std::vector<Tensor> whole, pieced, grads;  // the same starting weights for both
      for (int64_t n : {1, 7, 17, 63, 65, 200}) {
        whole.push_back(Tensor::zeros({n}));
        grads.push_back(Tensor::zeros({n}));
        for (int64_t i = 0; i < n; ++i) whole.back().data<float>()[i] = rng.normal();
        pieced.push_back(whole.back().clone());
      }
      auto parameters_of = [&](std::vector<Tensor>& w) {
        std::vector<Parameter> list;
        for (size_t p = 0; p < w.size(); ++p) list.push_back({"p" + std::to_string(p), w[p], &grads[p]});
        list.back().learning_rate_scale = 0.5f;
        return list;
      };
      auto whole_parameters = parameters_of(whole), pieced_parameters = parameters_of(pieced);
      auto one = Optimizer::create(o);
      std::vector<std::unique_ptr<Optimizer>> ranks;
      for (int r = 0; r < parts; ++r) ranks.push_back(Optimizer::create(o));
      for (int step = 0; step < 4; ++step) {
        for (auto& g : grads)
          for (int64_t i = 0; i < g.numel(); ++i) g.data<float>()[i] = rng.normal();
        one->step(whole_parameters);
        for (int r = 0; r < parts; ++r) ranks[static_cast<size_t>(r)]->step(pieced_parameters, r, parts);
        for (size_t p = 0; p < whole.size(); ++p)
          ASSERT_EQ(0, std::memcmp(whole[p].raw(), pieced[p].raw(), whole[p].nbytes())) << "parameter " << p << ", step " << step;
      }
    }
}

TEST(Optimizer, CreateRejectsUnknownNamesAndBadRates) {
  OptimizerOptions o;
  o.name = "rmsprop";
  EXPECT_LOWBIT_ERROR(Optimizer::create(o), "unknown optimizer 'rmsprop'");
  o.name = "adam";
  o.learning_rate = 0;
  EXPECT_LOWBIT_ERROR(Optimizer::create(o), "learning rate");
}

TEST(Init, GlorotUniformRespectsItsLimit) {
  Tensor w(DType::F32, {64, 784});
  Rng rng(0);
  initialize(w, Init::GlorotUniform, 784, 64, rng);
  const float limit = std::sqrt(6.0f / (784 + 64));
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < w.numel(); ++i) {
    float v = w.data<float>()[i];
    ASSERT_LE(std::fabs(v), limit);
    sum += v, sq += double(v) * v;
  }
  EXPECT_NEAR(sum / w.numel(), 0.0, 0.002);
  EXPECT_NEAR(sq / w.numel(), limit * limit / 3.0, 0.0003);  // variance of U(-a, a) is a^2/3
}

TEST(Init, HeNormalHasItsVariance) {
  Tensor w(DType::F32, {256, 400});
  Rng rng(1);
  initialize(w, Init::HeNormal, 400, 256, rng);
  double sq = 0;
  for (int64_t i = 0; i < w.numel(); ++i) sq += double(w.data<float>()[i]) * w.data<float>()[i];
  EXPECT_NEAR(sq / w.numel(), 2.0 / 400, 0.0002);
  EXPECT_LOWBIT_ERROR(init_from_name("lecun"), "unknown initializer");
}

}  // namespace
}  // namespace lowbit
