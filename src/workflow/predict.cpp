// predict() and save_predictions(): the steps of `lowbit predict` (include/lowbit/workflow.h).
#include <algorithm>

#include "core/file_util.h"
#include "lowbit/workflow.h"

namespace lowbit {

namespace {
// The top-1 class of every row of logits [N, classes]: the first maximum, as evaluate() counts it.
std::vector<int32_t> classes_of(const Tensor& logits) {
  const int64_t n = logits.dim(0), classes = logits.dim(1);
  std::vector<int32_t> result(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits.data<float>() + i * classes;
    result[static_cast<size_t>(i)] = static_cast<int32_t>(std::max_element(row, row + classes) - row);
  }
  return result;
}
}  // namespace

PredictResult predict(const Graph& model, const Dataset& data, const PredictOptions& options) {
  PredictResult r;
  // compute_logits runs evaluate()'s batches (the same shape check, the same gather_batch, the
  // same logits value), so the classes below are the ones evaluate() scores.
  r.logits = compute_logits(model, data, options.batch_size);
  if (data.size() == 0) {  // compute_logits cannot see the class count without a batch
    r.logits = Tensor(DType::F32, {0, model.infer_shapes().at(logits_value(model)).shape.at(1)});
    return r;
  }
  r.classes = classes_of(r.logits);
  int64_t correct = 0;
  for (int64_t i = 0; i < data.size(); ++i) correct += r.classes[static_cast<size_t>(i)] == data.labels[static_cast<size_t>(i)];
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.size());
  return r;
}

PredictResult predict(const Graph& model, const Tensor& images, const PredictOptions& options) {
  return Predictor(model, options).predict(images);
}

Predictor::Predictor(const Graph& model, const PredictOptions& options) : model_(model), options_(options) {
  if (model.inputs.size() != 1)
    throw Error(ErrorKind::InvalidArgument, "predict: the model has " + std::to_string(model.inputs.size()) +
                                                " inputs; predict feeds exactly one (the image)");
  if (model.inputs[0].dtype != DType::U8 && model.inputs[0].dtype != DType::F32)
    throw Error(ErrorKind::InvalidArgument, "predict: the model's input '" + model.inputs[0].name + "' is " +
                                                name_of(model.inputs[0].dtype) + "; images feed a u8 or f32 input");
  if (options.batch_size < 1) throw Error(ErrorKind::InvalidArgument, "batch size must be at least 1");
  logits_ = logits_value(model);
  const Shape logits_shape = model.infer_shapes().at(logits_).shape;
  if (logits_shape.size() != 2)
    throw Error(ErrorKind::InvalidArgument, "predict: the model's logits '" + logits_ + "' have shape " + to_string(logits_shape) +
                                                "; a classifier's are [N, classes]");
  classes_ = logits_shape[1];
  run_ = std::make_unique<Executor>(model_);
}

Predictor::~Predictor() = default;

PredictResult Predictor::predict(const Tensor& images) {
  const ValueInfo& input = model_.inputs[0];
  const Shape sample(input.shape.begin() + std::min<size_t>(1, input.shape.size()), input.shape.end());
  Shape expected = sample;
  expected.insert(expected.begin(), -1);
  if (images.dtype() != DType::U8 && !(images.dtype() == DType::F32 && input.dtype == DType::F32))
    throw Error(ErrorKind::InvalidArgument,
                "predict: the batch for input '" + input.name + "' (" + name_of(input.dtype) + ") is " + name_of(images.dtype()) +
                    "; expected u8 pixel values (as a Dataset holds them), which the model scales (in its graph, or by "
                    "its input_scale when its input is f32)" +
                    (input.dtype == DType::F32 ? ", or f32 values, which it reads as they are" : ""));
  // The sample shape, or that without a leading channel of 1 (images [N, 28, 28] for [N, 1, 28, 28]), as for a Dataset.
  const Shape given(images.shape().begin() + std::min(1, images.rank()), images.shape().end());
  const bool one_channel = sample.size() >= 2 && sample[0] == 1 && std::equal(sample.begin() + 1, sample.end(), given.begin(), given.end());
  if (images.rank() < 1 || (given != sample && !one_channel))
    throw Error(ErrorKind::InvalidArgument, "predict: input '" + input.name + "' takes a batch of shape " + to_string(expected) +
                                                ", the batch has " + to_string(images.shape()));
  // The batch as an unlabelled Dataset (sharing the images' storage), through evaluate()'s
  // gather_batch and logits value, batch by batch as compute_logits runs them: the same logits.
  Dataset data;
  data.images = images;
  const int64_t n = images.dim(0);
  PredictResult r;
  r.logits = Tensor(DType::F32, {n, classes_});
  run_batches(*run_, model_, data, n, options_.batch_size, logits_, [&](int64_t begin, int64_t count, const Tensor& logits) {
    std::copy_n(logits.data<float>(), count * classes_, r.logits.data<float>() + begin * classes_);
  });
  r.classes = classes_of(r.logits);
  return r;
}

void save_predictions(const PredictResult& predictions, std::span<const int32_t> labels, const std::string& path) {
  const size_t n = predictions.classes.size();
  if (!labels.empty() && labels.size() != n)
    throw Error(ErrorKind::InvalidArgument, "save_predictions: " + std::to_string(labels.size()) + " labels for " +
                                                std::to_string(n) + " predictions");
  std::string text = labels.empty() ? "index,class\n" : "index,class,label\n";
  for (size_t i = 0; i < n; ++i) {
    text += std::to_string(i) + ',' + std::to_string(predictions.classes[i]);
    text += labels.empty() ? "\n" : ',' + std::to_string(labels[i]) + '\n';
  }
  files::write_file_atomically(path, text);
}

}  // namespace lowbit
