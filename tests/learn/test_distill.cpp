// Knowledge distillation: the DistillationLoss op against hand-computed values and finite
// differences, training with cached vs on-the-fly teacher logits, and the teacher-logit cache.
#include <cmath>
#include <cstring>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::fill_uniform;

float run_loss(const Tensor& student, const Tensor& teacher, const Tensor& labels, float temperature, float alpha,
               Tensor* grad = nullptr) {
  Node node{"l", "DistillationLoss", {"s", "t", "y"}, {"loss"}, {{"temperature", temperature}, {"alpha", alpha}}};
  const Op& op = find_op("DistillationLoss");
  Tensor loss(DType::F32, {1});
  std::vector<const Tensor*> in = {&student, &teacher, &labels};
  std::vector<Tensor*> out = {&loss};
  op.forward(node, in, out);
  if (grad) {
    Tensor one = Tensor::from_vector({1}, std::vector<float>{1.0f});
    std::vector<const Tensor*> outs = {&loss}, out_grads = {&one};
    std::vector<Tensor*> in_grads = {grad, nullptr, nullptr};
    op.backward(node, in, outs, out_grads, in_grads);
  }
  return loss.data<float>()[0];
}

Tensor labels_of(std::vector<int32_t> v) {
  Tensor t(DType::S32, {static_cast<int64_t>(v.size())});
  std::copy(v.begin(), v.end(), t.data<int32_t>());
  return t;
}

TEST(Distillation, LossMatchesHandComputedValues) {
  // Student logits [0, ln 3] -> softmax [1/4, 3/4]; teacher logits [ln 3, 0] -> [3/4, 1/4].
  const Tensor s = Tensor::from_vector({1, 2}, std::vector<float>{0.0f, std::log(3.0f)});
  const Tensor t = Tensor::from_vector({1, 2}, std::vector<float>{std::log(3.0f), 0.0f});
  const Tensor y = labels_of({1});
  const double ce = -std::log(0.75);
  const double kl_t1 = 0.75 * std::log(0.75 / 0.25) + 0.25 * std::log(0.25 / 0.75);  // KL(p_t || p_s) at T = 1
  EXPECT_NEAR(run_loss(s, t, y, 1.0f, 0.0f), ce, 1e-6);            // alpha 0: labels only
  EXPECT_NEAR(run_loss(s, t, y, 1.0f, 1.0f), kl_t1, 1e-6);         // alpha 1: teacher only
  EXPECT_NEAR(run_loss(s, t, y, 1.0f, 0.3f), 0.3 * kl_t1 + 0.7 * ce, 1e-6);
  // T = 2: softmax([0, ln3] / 2) = [1, sqrt 3] / (1 + sqrt 3), and the soft term is scaled by T^2.
  const double r = std::sqrt(3.0), ps0 = 1 / (1 + r), ps1 = r / (1 + r);
  const double kl_t2 = ps1 * std::log(ps1 / ps0) + ps0 * std::log(ps0 / ps1);
  EXPECT_NEAR(run_loss(s, t, y, 2.0f, 0.5f), 0.5 * 4.0 * kl_t2 + 0.5 * ce, 1e-6);
  // The same teacher and student: the soft term is zero.
  EXPECT_NEAR(run_loss(s, s, y, 4.0f, 1.0f), 0.0, 1e-7);
}

TEST(Distillation, GradientMatchesFiniteDifferences) {
  for (float temperature : {1.0f, 4.0f})
    for (float alpha : {0.0f, 0.7f, 1.0f}) {
      Tensor s(DType::F32, {3, 5}), t(DType::F32, {3, 5});
      fill_uniform(s, 1, -3, 3);
      fill_uniform(t, 2, -3, 3);
      const Tensor y = labels_of({4, 0, 2});
      Tensor grad(DType::F32, {1});
      run_loss(s, t, y, temperature, alpha, &grad);
      ASSERT_EQ(grad.shape(), s.shape());
      for (int64_t k = 0; k < s.numel(); ++k) {
        const float saved = s.data<float>()[k], eps = 1e-2f;
        s.data<float>()[k] = saved + eps;
        const double plus = run_loss(s, t, y, temperature, alpha);
        s.data<float>()[k] = saved - eps;
        const double minus = run_loss(s, t, y, temperature, alpha);
        s.data<float>()[k] = saved;
        EXPECT_NEAR(grad.data<float>()[k], (plus - minus) / (2 * eps), 2e-3) << "T " << temperature << " alpha " << alpha;
      }
    }
}

TEST(Distillation, RejectsBadAttributesAndShapes) {
  const Tensor s(DType::F32, {2, 3}), t(DType::F32, {2, 4});
  Graph g;
  g.inputs = {{"s", DType::F32, {-1, 3}}, {"t", DType::F32, {-1, 4}}, {"y", DType::S32, {-1}}};
  g.add_node({"l", "DistillationLoss", {"s", "t", "y"}, {"loss"}});
  g.outputs = {"loss"};
  EXPECT_LOWBIT_ERROR(g.validate(), "teacher logits must be [batch, 3]");
  g.inputs[1].shape = {-1, 3};
  g.nodes[0].attributes["temperature"] = 0.0;
  EXPECT_LOWBIT_ERROR(g.validate(), "temperature");
  g.nodes[0].attributes["temperature"] = 2.0;
  g.nodes[0].attributes["alpha"] = 1.5;
  EXPECT_LOWBIT_ERROR(g.validate(), "alpha");
}

class DistillData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DatasetSplits all = load_dataset_dir(testing::test_dataset_dir());
    data_ = new DatasetSplits{all.train.head(1500), all.test.head(500)};
    teacher_ = new Graph(build_model(parse_arch("784-64-10"), {28, 28}, 10, 3));
    TrainOptions o;
    o.epochs = 2;
    train(*teacher_, data_->train, o);
  }
  static void TearDownTestSuite() {
    delete data_;
    delete teacher_;
  }
  static DatasetSplits* data_;
  static Graph* teacher_;
};
DatasetSplits* DistillData::data_ = nullptr;
Graph* DistillData::teacher_ = nullptr;

TEST_F(DistillData, CachedAndOnTheFlyTeacherLogitsTrainTheSameStudent) {
  testing::TempDir dir;
  TeacherLogits cached = teacher_logits(*teacher_, data_->train, dir.file("t.logits"));
  EXPECT_FALSE(cached.from_cache);
  EXPECT_EQ(cached.logits.shape(), (Shape{1500, 10}));
  auto student = [&](const DistillSettings& d) {
    Graph s = build_model(parse_arch("784-16-10"), {28, 28}, 10, 5);
    TrainOptions o;
    o.epochs = 1;
    o.distill = d;
    train(s, data_->train, o);
    return serialize_model(s);
  };
  DistillSettings from_cache;
  from_cache.teacher_logits = &cached.logits;
  DistillSettings on_the_fly;
  on_the_fly.teacher = teacher_;
  EXPECT_TRUE(student(from_cache) == student(on_the_fly));
}

TEST_F(DistillData, AlphaZeroIsPlainTraining) {
  TeacherLogits t = teacher_logits(*teacher_, data_->train, "");
  auto student = [&](bool distill) {
    Graph s = build_model(parse_arch("784-16-10"), {28, 28}, 10, 5);
    TrainOptions o;
    o.epochs = 1;
    if (distill) o.distill.teacher_logits = &t.logits, o.distill.alpha = 0.0f, o.distill.temperature = 1.0f;
    train(s, data_->train, o);
    return serialize_model(s);
  };
  EXPECT_TRUE(student(true) == student(false));  // the same floats, bit for bit
}

TEST_F(DistillData, StaleOrDamagedCacheIsDetectedAndRebuilt) {
  testing::TempDir dir;
  const std::string path = dir.file("teacher.logits");
  TeacherLogits first = teacher_logits(*teacher_, data_->train, path);
  EXPECT_FALSE(first.from_cache);
  EXPECT_NE(first.note.find("no cache yet"), std::string::npos);
  TeacherLogits again = teacher_logits(*teacher_, data_->train, path);
  EXPECT_TRUE(again.from_cache);
  EXPECT_TRUE(again.note.empty());

  // A changed teacher (one weight moved) must not reuse the old logits.
  Graph changed = *teacher_;
  Tensor w = changed.initializers.begin()->second.clone();
  w.data<float>()[0] += 0.5f;
  changed.initializers.begin()->second = w;
  TeacherLogits stale = teacher_logits(changed, data_->train, path);
  EXPECT_FALSE(stale.from_cache);
  EXPECT_NE(stale.note.find("another teacher or other data"), std::string::npos) << stale.note;
  const Tensor fresh = compute_logits(changed, data_->train);
  EXPECT_EQ(0, std::memcmp(stale.logits.raw(), fresh.raw(), fresh.nbytes()));
  // Other data: same.
  TeacherLogits other = teacher_logits(changed, data_->train.head(1499), path);
  EXPECT_FALSE(other.from_cache);
  // A damaged file (a flipped data byte) is detected by its checksum.
  std::string bytes = testing::read_bytes(path);
  bytes[bytes.size() - 3] ^= 0x40;
  testing::write_bytes(path, bytes);
  TeacherLogits damaged = teacher_logits(changed, data_->train.head(1499), path);
  EXPECT_FALSE(damaged.from_cache);
  EXPECT_NE(damaged.note.find("checksum"), std::string::npos) << damaged.note;
  // Not a cache at all.
  testing::write_bytes(path, "hello");
  EXPECT_NE(teacher_logits(changed, data_->train.head(10), path).note.find("not a teacher-logit cache"), std::string::npos);
  EXPECT_TRUE(teacher_logits(changed, data_->train.head(10), path).from_cache);  // rebuilt, now valid
}

TEST_F(DistillData, MismatchedTeacherIsAClearError) {
  Graph wrong = build_model(parse_arch("784-8-10"), {28, 28}, 10, 1);
  Tensor logits(DType::F32, {10, 10});
  Graph s = build_model(parse_arch("784-16-10"), {28, 28}, 10, 5);
  TrainOptions o;
  o.epochs = 1;
  o.distill.teacher_logits = &logits;  // 10 rows for 1500 samples
  EXPECT_LOWBIT_ERROR(train(s, data_->train, o), "one row per training sample");
}

}  // namespace
}  // namespace lowbit
