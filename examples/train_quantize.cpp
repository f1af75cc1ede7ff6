// The whole of lowbit on one screen: train the reference MLP on Fashion-MNIST, quantize it to
// 4-bit weights and 8-bit activations (integer-only inference), compare the two and save both.
// Every call is the public API (include/lowbit/lowbit.h); the CLI's train / calibrate / quantize /
// compare steps are these same calls.
//
//   build/release/examples/train_quantize [DATA_DIR] [EPOCHS] [OUT_PREFIX]
//   (defaults: /usr/share/datasets/fashion-mnist, 10 epochs, "mlp": writes mlp.lbm and mlp-w4.lbm)
#include <cstdio>
#include <cstdlib>
#include <string>

#include "lowbit/lowbit.h"

int main(int argc, char** argv) try {
  const std::string data_dir = argc > 1 ? argv[1] : lowbit::default_dataset_dir();
  const int epochs = argc > 2 ? std::atoi(argv[2]) : 10;
  const std::string out = argc > 3 ? argv[3] : "mlp";

  // 1. Data: the four IDX files of the MNIST family, [N, 28, 28] u8 images and their labels.
  const lowbit::DatasetSplits data = lowbit::load_dataset_dir(data_dir);
  std::printf("data: %lld training and %lld test images from %s\n", static_cast<long long>(data.train.size()),
              static_cast<long long>(data.test.size()), data_dir.c_str());

  // 2. The model: MLP 784-64-32-10 (ReLU, ReLU, softmax), Glorot-uniform weights from seed 0.
  lowbit::Graph model =
      lowbit::build_model(lowbit::parse_arch("784-64-32-10"), data.train.sample_shape(), data.train.num_classes, 0);

  // 3. Training: Adam 1e-3, batch 32, shuffled with seed 0. Same seed, data and threads: same bytes.
  lowbit::TrainOptions options;
  options.epochs = epochs;
  options.batch_size = 32;
  options.optimizer.name = "adam";
  options.optimizer.learning_rate = 1e-3f;
  options.on_progress = [](const lowbit::TrainProgress& p) {
    if (p.epoch_done) std::printf("epoch %d/%d: loss %.4f, accuracy %.4f\n", p.epoch, p.epochs, p.loss, p.accuracy);
  };
  const lowbit::TrainReport trained = lowbit::train(model, data.train, options);
  std::printf("trained in %.2f s\n", trained.seconds);

  // 4. Calibration: the range of every activation over the first 1000 training images.
  lowbit::CalibrationOptions calibration;
  calibration.samples = 1000;
  const lowbit::Calibration ranges = lowbit::calibrate(model, data.train, calibration);

  // 5. Quantization: every Dense layer becomes a QDense with 4-bit per-channel symmetric weights,
  //    8-bit activations and int32 accumulation; the graph computes in integers end to end.
  lowbit::QuantPlan plan;
  plan.mode = lowbit::QuantMode::Full;
  plan.defaults.weight_bits = 4;
  const lowbit::Graph quantized = lowbit::quantize_model(model, plan, {{ranges.method, ranges}});

  // 6. Comparison on the 10 000 test images: accuracy, how often the two agree, file size.
  const lowbit::EvalReport float_eval = lowbit::evaluate(model, data.test);
  const lowbit::EvalReport int_eval = lowbit::evaluate(quantized, data.test);
  const std::vector<int32_t> a = lowbit::predict_classes(model, data.test), b = lowbit::predict_classes(quantized, data.test);
  int64_t agree = 0;
  for (size_t i = 0; i < a.size(); ++i) agree += a[i] == b[i];
  const size_t float_bytes = lowbit::serialize_model(model).size();
  const size_t int_bytes = lowbit::serialize_model(quantized).size();
  std::printf("float32:        accuracy %.4f, %zu bytes\n", float_eval.accuracy, float_bytes);
  std::printf("4-bit weights:  accuracy %.4f, %zu bytes (%.1f %% of float), agrees on %.2f %% of the test images\n",
              int_eval.accuracy, int_bytes, 100.0 * static_cast<double>(int_bytes) / static_cast<double>(float_bytes),
              100.0 * static_cast<double>(agree) / static_cast<double>(a.size()));

  // 7. Saving: both are ordinary model files (atomic writes), loadable by `lowbit eval` and the API.
  lowbit::save_model(model, out + ".lbm");
  lowbit::save_model(quantized, out + "-w4.lbm");
  std::printf("saved %s.lbm and %s-w4.lbm\n", out.c_str(), out.c_str());

  // A trained MLP is far above chance (10 %) and its 4-bit version within a few points of it.
  const bool ok = float_eval.accuracy > 0.75 && int_eval.accuracy > float_eval.accuracy - 0.05;
  if (!ok) std::fprintf(stderr, "train_quantize: accuracy below what this pipeline reaches\n");
  return ok ? 0 : 1;
} catch (const lowbit::Error& e) {
  std::fprintf(stderr, "train_quantize: %s\n", e.what());
  return 2;
}
