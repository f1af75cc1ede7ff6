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
