// lowbit/lowbit.h - everything in one include.
//
// lowbit trains small neural networks, quantizes them and runs them fast on the CPU. The whole
// reference pipeline in a few lines (see examples/ and the README for more):
//
//   #include <lowbit/lowbit.h>
//   auto data  = lowbit::load_dataset_dir(lowbit::default_dataset_dir());      // Fashion-MNIST
//   auto model = lowbit::build_model(lowbit::parse_arch("784-64-32-10"),
//                                    data.train.sample_shape(), data.train.num_classes, 0);
//   lowbit::train(model, data.train, lowbit::TrainOptions{});                 // Adam, 10 epochs
//   double accuracy = lowbit::evaluate(model, data.test).accuracy;
//   lowbit::save_model(model, "model.lbm");
//
// Headers by concern: error.h (the one error type), tensor.h, random.h, runtime_config.h (threads,
// ISA dispatch), graph.h and ops.h (the IR), executor.h (running a graph),
// train.h (optimizers, training, evaluation), dataset.h (data in memory), idx.h (IDX files), model_io.h (model files).
#pragma once

#include "lowbit/calibration.h"
#include "lowbit/checkpoint.h"
#include "lowbit/dataset.h"
#include "lowbit/distill.h"
#include "lowbit/error.h"
#include "lowbit/executor.h"
#include "lowbit/graph.h"
#include "lowbit/idx.h"
#include "lowbit/model_io.h"
#include "lowbit/npy.h"
#include "lowbit/onnx.h"
#include "lowbit/ops.h"
#include "lowbit/qat.h"
#include "lowbit/quant_params.h"
#include "lowbit/quant_search.h"
#include "lowbit/quantize.h"
#include "lowbit/random.h"
#include "lowbit/runtime_config.h"
#include "lowbit/sweep.h"
#include "lowbit/tensor.h"
#include "lowbit/train.h"
#include "lowbit/workflow.h"
#include "lowbit/workspace.h"
