// predict() and save_predictions(): the steps of `lowbit predict` (include/lowbit/workflow.h).
#include <algorithm>

#include "core/file_util.h"
#include "lowbit/workflow.h"

namespace lowbit {

PredictResult predict(const Graph& model, const Dataset& data, const PredictOptions& options) {
  PredictResult r;
  // compute_logits runs evaluate()'s batches (the same shape check, the same gather_batch, the
  // same logits value), so the classes below are the ones evaluate() scores.
  r.logits = compute_logits(model, data, options.batch_size);
  if (data.size() == 0) {  // compute_logits cannot see the class count without a batch
    r.logits = Tensor(DType::F32, {0, model.infer_shapes().at(logits_value(model)).shape.at(1)});
    return r;
  }
  const int64_t classes = r.logits.dim(1);
  r.classes.resize(static_cast<size_t>(data.size()));
  int64_t correct = 0;
  for (int64_t i = 0; i < data.size(); ++i) {
    const float* row = r.logits.data<float>() + i * classes;
    r.classes[i] = static_cast<int32_t>(std::max_element(row, row + classes) - row);  // first maximum, as evaluate()
    correct += r.classes[i] == data.labels[i];
  }
  r.accuracy = static_cast<double>(correct) / static_cast<double>(data.size());
  return r;
}

PredictResult predict(const Graph& model, const Tensor& images, const PredictOptions& options) {
  if (model.inputs.size() != 1)
    throw Error(ErrorKind::InvalidArgument, "predict: the model has " + std::to_string(model.inputs.size()) +
                                                " inputs; predict feeds exactly one (the image)");
  const ValueInfo& input = model.inputs[0];
  const Shape sample(input.shape.begin() + std::min<size_t>(1, input.shape.size()), input.shape.end());
  Shape expected = sample;
  expected.insert(expected.begin(), -1);
  if (images.dtype() != DType::U8)
    throw Error(ErrorKind::InvalidArgument, "predict: the batch for input '" + input.name + "' is " +
                                                name_of(images.dtype()) +
                                                "; a raw batch holds u8 pixel values (as a Dataset does), which the "
                                                "model scales (in its graph, or by its input_scale when its input is f32)");
  if (images.rank() != static_cast<int>(expected.size()) || !std::equal(sample.begin(), sample.end(), images.shape().begin() + 1))
    throw Error(ErrorKind::InvalidArgument, "predict: input '" + input.name + "' takes a batch of shape " + to_string(expected) +
                                                ", the batch has " + to_string(images.shape()));
  // The batch as an unlabelled Dataset (it shares the images' storage), so that it goes through
  // evaluate()'s path; its labels are placeholders, and the accuracy they would give is dropped.
  Dataset data;
  data.images = images;
  data.labels.assign(static_cast<size_t>(images.dim(0)), 0);
  PredictResult r = predict(model, data, options);
  r.accuracy.reset();
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
