// The Python module lowbit._lowbit: the library's workflow calls (include/lowbit/workflow.h) over
// numpy arrays, one call per CLI step. No logic of its own: arguments become the C++ options,
// results become Python objects, lowbit::Error becomes a lowbit.Error subclass. Long calls release
// the GIL; training checks for Ctrl-C after every batch.
#include <nanobind/nanobind.h>
#include <nanobind/stl/function.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "arrays.h"
#include "lowbit/lowbit.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace lowbit::python {
namespace {

// ---- Errors --------------------------------------------------------------------------------------

PyObject* error_types[6] = {};  // by ErrorKind

void register_errors(nb::module_& m) {
  PyObject* base = PyErr_NewExceptionWithDoc("lowbit.Error", "Every error lowbit reports (the CLI's one line of text).",
                                             PyExc_Exception, nullptr);
  auto derived = [&](const char* name, const char* doc, PyObject* builtin) {
    PyObject* bases = builtin ? PyTuple_Pack(2, base, builtin) : PyTuple_Pack(1, base);
    PyObject* type = PyErr_NewExceptionWithDoc(name, doc, bases, nullptr);
    Py_DECREF(bases);
    return type;
  };
  PyObject* argument = derived("lowbit.ArgumentError", "A bad argument: dtype, shape, value or option (also a ValueError).",
                               PyExc_ValueError);
  PyObject* io = derived("lowbit.IoError", "A file that cannot be opened, read or written (also an OSError).", PyExc_OSError);
  PyObject* format = derived("lowbit.FormatError", "A file whose contents are not what its format requires.", nullptr);
  PyObject* unsupported = derived("lowbit.UnsupportedError", "Valid, but not handled by this build (an ONNX op, a newer file).",
                                  nullptr);
  PyObject* internal = derived("lowbit.InternalError", "A broken invariant: a bug in lowbit (please report it).", nullptr);
  PyObject* interrupted = derived("lowbit.Interrupted",
                                  "Training stopped by Ctrl-C at a step boundary (also a KeyboardInterrupt); the message says where "
                                  "its checkpoint is, if it had a checkpoint_dir.",
                                  PyExc_KeyboardInterrupt);
  error_types[static_cast<int>(ErrorKind::InvalidArgument)] = argument;
  error_types[static_cast<int>(ErrorKind::Io)] = io;
  error_types[static_cast<int>(ErrorKind::Format)] = format;
  error_types[static_cast<int>(ErrorKind::Unsupported)] = unsupported;
  error_types[static_cast<int>(ErrorKind::Internal)] = internal;
  error_types[static_cast<int>(ErrorKind::Interrupted)] = interrupted;
  m.attr("Error") = nb::handle(base);
  m.attr("ArgumentError") = nb::handle(argument);
  m.attr("IoError") = nb::handle(io);
  m.attr("FormatError") = nb::handle(format);
  m.attr("UnsupportedError") = nb::handle(unsupported);
  m.attr("InternalError") = nb::handle(internal);
  m.attr("Interrupted") = nb::handle(interrupted);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      PyErr_SetString(error_types[static_cast<int>(e.kind())], e.what());
    }
  });
}

[[noreturn]] void bad_argument(const std::string& message) { throw Error(ErrorKind::InvalidArgument, message); }

// ---- Objects ---------------------------------------------------------------------------------------

// A model: the graph, where it came from, and what the call that made it measured.
struct Model {
  Graph graph;
  std::string source;  // the file it was loaded from, or ""
  nb::dict report;
  // predict()'s planned model, made by the first call and kept (the graph never changes): later
  // calls cost their batch only. A call while another thread holds it plans a fresh one.
  std::shared_ptr<std::mutex> predictor_lock = std::make_shared<std::mutex>();
  std::shared_ptr<Predictor> predictor;
  int predictor_batch = 0;
};

// Training and test splits: IDX files from a folder, or numpy arrays.
struct Data {
  DatasetSplits splits;
  std::string name;  // the folder's name ("" for arrays): the models' "trained_on"
};

const Dataset& split_of(const Data& data, const std::string& split) {
  if (split == "test") return data.splits.test;
  if (split == "train") return data.splits.train;
  bad_argument("split must be \"train\" or \"test\", got \"" + split + "\"");
}

Data load_data(const std::string& folder) {
  Data d;
  d.splits = load_dataset_dir(folder);
  d.name = std::filesystem::path(folder).filename().string();
  return d;
}

Data data_from_arrays(nb::handle x_train, nb::handle y_train, nb::handle x_test, nb::handle y_test, int num_classes) {
  Tensor train = tensor_from_array(x_train, "x_train"), test = tensor_from_array(x_test, "x_test");
  std::vector<int32_t> train_labels = labels_from_array(y_train, "y_train"), test_labels = labels_from_array(y_test, "y_test");
  if (num_classes == 0) {
    for (int32_t l : train_labels) num_classes = std::max(num_classes, l + 1);
    for (int32_t l : test_labels) num_classes = std::max(num_classes, l + 1);
  }
  Data d;
  try {
    d.splits.train = make_dataset(std::move(train), std::move(train_labels), num_classes);
  } catch (const Error& e) {
    bad_argument(std::string("x_train, y_train: ") + e.what());
  }
  try {
    d.splits.test = make_dataset(std::move(test), std::move(test_labels), num_classes);
  } catch (const Error& e) {
    bad_argument(std::string("x_test, y_test: ") + e.what());
  }
  const Dataset &a = d.splits.train, &b = d.splits.test;
  if (a.images.dtype() != b.images.dtype())
    bad_argument(std::string("x_train is ") + name_of(a.images.dtype()) + " but x_test is " + name_of(b.images.dtype()) +
                 "; both splits hold the same kind of values");
  if (a.sample_shape() != b.sample_shape())
    bad_argument("x_train's samples have shape " + to_string(a.sample_shape()) + ", x_test's " + to_string(b.sample_shape()) +
                 "; both must be the same");
  return d;
}

// A model read from `path` by `read`, with the GIL released while it reads.
template <typename Read>
Model read_model(const std::string& path, Read read) {
  Graph g;
  {
    nb::gil_scoped_release unlocked;
    g = read(path);
  }
  return Model{std::move(g), path, {}};
}

const Graph& graph_of(const Model* model, const char* what) {
  if (!model) bad_argument(std::string(what) + ": expected a lowbit.Model, got None");
  return model->graph;
}

void check_threads(std::optional<int> threads) {
  if (threads) set_num_threads(*threads);
}

// ---- Progress --------------------------------------------------------------------------------------

// The hook the training loop calls after every batch: checks for Ctrl-C (KeyboardInterrupt within
// a batch), then calls `callback` or, without one, lowbit's progress bar when `progress` is true.
// The per-batch hook of a training call: the Python callback (or a progress bar), and Ctrl-C: a
// pending KeyboardInterrupt asks training to stop at the step boundary (`stop`), which writes a
// checkpoint when it has a checkpoint_dir and raises lowbit.Interrupted (a KeyboardInterrupt).
std::function<void(const TrainProgress&)> progress_hook(nb::object callback, bool progress, const std::string& phase,
                                                        std::shared_ptr<std::atomic<bool>> stop = nullptr) {
  if (callback.is_none() && progress) callback = nb::module_::import_("lowbit._progress").attr("ProgressBar")(phase);
  if (!callback.is_none() && !PyCallable_Check(callback.ptr()))
    bad_argument("callback: expected a callable taking a lowbit.Progress, got a " +
                 nb::cast<std::string>(callback.type().attr("__name__")));
  auto held = std::make_shared<nb::object>(std::move(callback));
  auto release = std::shared_ptr<void>(nullptr, [held](void*) {
    nb::gil_scoped_acquire gil;
    *held = nb::object();
  });
  return [held, release, stop](const TrainProgress& p) {
    nb::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      if (!stop || !PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) throw nb::python_error();
      PyErr_Clear();
      stop->store(true);
      return;
    }
    if (held->is_none()) return;
    try {
      (*held)(p);
    } catch (nb::python_error& e) {  // Ctrl-C while the callback ran Python: the same stop
      if (!stop || !e.matches(PyExc_KeyboardInterrupt)) throw;
      stop->store(true);
    }
  };
}

// checkpoint_dir, checkpoint_every and resume of train, qat and distill, as the CLI's options
// (CheckpointFile::in_directory's layout), every checkpoint_every steps (0: every epoch).
struct Checkpoints {
  std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::unique_ptr<CheckpointFile>> files;
  void apply(TrainOptions& o, const std::optional<std::string>& dir, int64_t every, bool resume, const std::string& phase = "") {
    o.stop = stop.get();
    if (every < 0) bad_argument("checkpoint_every must be >= 0 steps (0: every epoch), got " + std::to_string(every));
    if (!dir) {
      if (resume) bad_argument("resume=True needs checkpoint_dir (where the checkpoint is)");
      return;
    }
    files.push_back(std::make_unique<CheckpointFile>(CheckpointFile::in_directory(*dir, phase)));
    o.checkpoints = files.back().get();
    o.checkpoint_every_steps = every;
    o.resume = resume;
  }
};

nb::list history_of(const TrainReport& report) {
  nb::list history;
  for (const auto& e : report.epochs) {
    nb::dict h;
    h["epoch"] = e.epoch, h["loss"] = e.loss, h["accuracy"] = e.accuracy, h["seconds"] = e.seconds;
    if (e.val_accuracy >= 0) h["val_loss"] = e.val_loss, h["val_accuracy"] = e.val_accuracy;
    history.append(h);
  }
  return history;
}

nb::dict eval_dict(const EvalReport& r) {
  nb::dict d;
  d["accuracy"] = r.accuracy, d["loss"] = r.loss, d["count"] = r.count;
  return d;
}

nb::list sensitivity_list(const std::vector<LayerSensitivity>& rows) {
  nb::list out;
  for (const auto& s : rows) {
    nb::dict d;
    d["layer"] = s.layer, d["parameters"] = s.parameters, d["accuracy"] = s.accuracy, d["drop_points"] = s.drop_points;
    d["sqnr_db"] = s.sqnr_db, d["cosine"] = s.cosine;
    out.append(d);
  }
  return out;
}

nb::object json_value(const std::string& text) { return nb::module_::import_("json").attr("loads")(text); }

// ---- Model information -----------------------------------------------------------------------------

nb::list shape_list(const Shape& shape) {
  nb::list l;
  for (int64_t d : shape) l.append(d);
  return l;
}

nb::dict value_dict(const ValueInfo& v) {
  nb::dict d;
  d["name"] = v.name, d["dtype"] = name_of(v.dtype), d["shape"] = shape_list(v.shape);
  return d;
}

nb::dict info_dict(const Model& m) {
  const ModelInfo info = model_info(m.graph);
  nb::dict d;
  d["name"] = info.name;
  nb::list inputs, outputs, layers;
  for (const auto& v : info.inputs) inputs.append(value_dict(v));
  for (const auto& v : info.outputs) outputs.append(value_dict(v));
  for (const auto& l : info.layers) {
    nb::dict layer;
    layer["name"] = l.name, layer["op"] = l.op, layer["output_shape"] = shape_list(l.output_shape);
    layer["parameters"] = l.parameters, layer["bytes"] = l.bytes;
    layer["weights"] = l.weights, layer["bits_per_weight"] = l.bits_per_weight;
    nb::list tensors;
    for (const auto& t : l.tensors) {
      nb::dict td;
      td["name"] = t.name, td["dtype"] = name_of(t.dtype), td["shape"] = shape_list(t.shape), td["bits"] = t.bits,
      td["bytes"] = t.bytes;
      tensors.append(td);
    }
    layer["tensors"] = tensors;
    layers.append(layer);
  }
  d["inputs"] = inputs, d["outputs"] = outputs, d["layers"] = layers;
  d["parameters"] = info.parameters, d["tensor_bytes"] = info.tensor_bytes;
  d["weights"] = info.weights, d["bits_per_weight"] = info.bits_per_weight;
  d["quantized"] = is_quantized(m.graph);
  d["metadata"] = m.graph.metadata;
  return d;
}

// ---- Quantization options --------------------------------------------------------------------------

QScheme scheme_named(const std::string& name, const char* what) {
  if (name == "symmetric") return QScheme::Symmetric;
  if (name == "affine") return QScheme::Affine;
  bad_argument(std::string(what) + " must be \"symmetric\" or \"affine\", got \"" + name + "\"");
}

void check_bits(int bits, const char* what) {
  if (bits != 8 && bits != 6 && bits != 4 && bits != 3 && bits != 2)
    bad_argument(std::string(what) + " must be 8, 6, 4, 3 or 2, got " + std::to_string(bits));
}

// A plan: a lowbit.Plan-like dict, JSON text, or the path of a plan file.
QuantPlan plan_from(nb::handle plan) {
  if (nb::isinstance<nb::dict>(plan))
    return QuantPlan::from_json(nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(plan)), "plan");
  if (nb::isinstance<nb::str>(plan)) {
    const std::string text = nb::cast<std::string>(plan);
    return text.starts_with("{") ? QuantPlan::from_json(text, "plan") : load_plan(text);
  }
  bad_argument("plan: expected a dict, JSON text or a plan file's path");
}

// lsq: None chooses by bit width (defaults_for_bits), as the CLI does.
QatOptions qat_options(int bits, bool per_channel, const std::string& scheme, std::optional<bool> lsq, int64_t observer_steps,
                       nb::handle plan) {
  QatOptions q;
  if (!plan.is_none()) {
    q.plan = plan_from(plan);
  } else {
    check_bits(bits, "bits");
    q.plan.defaults.weight_bits = bits;
    q.plan.defaults.per_channel = per_channel;
    q.plan.defaults.weight_scheme = scheme_named(scheme, "scheme");
  }
  q.lsq = lsq.value_or(plan.is_none() && defaults_for_bits(bits).lsq);
  q.observer_steps = observer_steps;
  return q;
}

nb::dict qat_report(const QatRunResult& r) {
  nb::dict d;
  d["float_test_accuracy"] = r.float_test.accuracy;
  d["fake_quant_test_accuracy"] = r.fake_quantized_accuracy;
  d["test_accuracy"] = r.accuracy;
  d["agreement"] = r.agreement;
  d["max_logit_difference"] = r.max_logit_difference;
  d["mean_logit_difference"] = r.mean_logit_difference;
  d["qat_history"] = history_of(r.report);
  d["qat_seconds"] = r.report.seconds;
  d["teacher_cache_hit"] = r.teacher_cache_hit;
  return d;
}

// An architecture: layer sizes ("784-64-32-10"), JSON text, a .json path, or a dict (a description).
std::string arch_from(nb::handle arch, const char* what) {
  if (nb::isinstance<nb::dict>(arch)) return nb::cast<std::string>(nb::module_::import_("json").attr("dumps")(arch));
  if (nb::isinstance<nb::str>(arch)) return nb::cast<std::string>(arch);
  bad_argument(std::string(what) + ": expected layer sizes (\"784-64-32-10\"), a JSON description (text, file or dict)");
}

OptimizerOptions optimizer(const std::string& name, float lr, float momentum, const std::string& schedule) {
  if (name != "adam" && name != "sgd") bad_argument("optimizer must be \"adam\" or \"sgd\", got \"" + name + "\"");
  if (schedule != "constant" && schedule != "cosine")
    bad_argument("lr_schedule must be \"constant\" or \"cosine\", got \"" + schedule + "\"");
  if (!(lr > 0)) bad_argument("lr must be positive, got " + std::to_string(lr));
  OptimizerOptions o;
  o.name = name, o.learning_rate = lr, o.momentum = momentum, o.schedule = schedule;
  return o;
}

void check_positive(int64_t value, const char* what) {
  if (value < 1) bad_argument(std::string(what) + " must be at least 1, got " + std::to_string(value));
}

}  // namespace

// ---- The module ------------------------------------------------------------------------------------

void bind(nb::module_& m) {
  nb::class_<TrainProgress>(m, "Progress",
                            "Where training stands, passed to a training call's callback after every batch.")
      .def_ro("epoch", &TrainProgress::epoch, "1-based epoch")
      .def_ro("epochs", &TrainProgress::epochs, "epochs of this phase")
      .def_ro("step", &TrainProgress::batch, "batches done in this epoch")
      .def_ro("steps", &TrainProgress::batches, "batches per epoch")
      .def_ro("loss", &TrainProgress::loss, "running mean loss over this epoch")
      .def_ro("accuracy", &TrainProgress::accuracy, "running mean accuracy over this epoch")
      .def_ro("elapsed_seconds", &TrainProgress::elapsed_seconds, "since training started")
      .def_ro("epoch_done", &TrainProgress::epoch_done, "True on the last batch of an epoch")
      .def_ro("val_loss", &TrainProgress::val_loss, "with a validation split, when epoch_done (else -1)")
      .def_ro("val_accuracy", &TrainProgress::val_accuracy, "with a validation split, when epoch_done (else -1)")
      .def("__repr__", [](const TrainProgress& p) {
        return "Progress(epoch=" + std::to_string(p.epoch) + "/" + std::to_string(p.epochs) + ", step=" + std::to_string(p.batch) +
               "/" + std::to_string(p.batches) + ", loss=" + std::to_string(p.loss) + ", accuracy=" + std::to_string(p.accuracy) + ")";
      });

  nb::class_<Model>(m, "Model",
                    "A model: a lowbit graph (float, quantized or fake-quantized). Made by load, train, quantize, qat, distill,\n"
                    "import_onnx; saved with save. `report` holds what the call that made it measured.")
      .def("save", [](const Model& self, const std::string& path) {
             nb::gil_scoped_release unlocked;
             save_model(self.graph, path);
           }, "path"_a, "Writes the native model file (.lbm), atomically.")
      .def("info", &info_dict, "What the model holds (as `lowbit info`): inputs, outputs, layers with their tensors' dtype, bits\n"
                               "and bytes, parameter count, metadata.")
      .def("to_bytes", [](const Model& self) {
             const std::string bytes = serialize_model(self.graph);
             return nb::bytes(bytes.data(), bytes.size());
           }, "The native model file's bytes (what save writes).")
      .def_static("from_bytes", [](nb::bytes bytes) {
             return Model{deserialize_model(std::string_view(bytes.c_str(), bytes.size()), "bytes"), "", {}};
           }, "data"_a, "A model from the bytes of a native model file.")
      .def("__getstate__", [](const Model& self) {
             const std::string bytes = serialize_model(self.graph);
             return nb::make_tuple(nb::bytes(bytes.data(), bytes.size()), self.source, self.report);
           })
      .def("__setstate__", [](Model& self, const std::tuple<nb::bytes, std::string, nb::dict>& state) {
             const nb::bytes& bytes = std::get<0>(state);
             new (&self) Model{deserialize_model(std::string_view(bytes.c_str(), bytes.size()), "pickled model"), std::get<1>(state),
                               std::get<2>(state)};
           })
      .def_prop_ro("name", [](const Model& self) { return self.graph.name; })
      .def_prop_ro("source", [](const Model& self) { return self.source; }, "The file it was loaded from, or ''.")
      .def_prop_ro("inputs", [](const Model& self) {
             nb::list l;
             for (const auto& v : self.graph.inputs) l.append(value_dict(v));
             return l;
           }, "[{'name', 'dtype', 'shape'}] (-1: a dynamic dimension)")
      .def_prop_ro("outputs", [](const Model& self) {
             nb::list l;
             const auto shapes = self.graph.infer_shapes();
             for (const auto& o : self.graph.outputs) l.append(value_dict(shapes.at(o)));
             return l;
           })
      .def_prop_ro("quantized", [](const Model& self) { return is_quantized(self.graph); })
      .def_prop_ro("parameters", [](const Model& self) { return self.graph.parameter_count(); })
      .def_prop_ro("metadata", [](const Model& self) { return self.graph.metadata; })
      .def_prop_ro("report", [](const Model& self) { return self.report; },
                   "What the call that made this model measured (history, test accuracy, plan ...); {} for a loaded model.")
      .def("__repr__", [](const Model& self) {
        return "<lowbit.Model '" + self.graph.name + "': " + std::to_string(self.graph.nodes.size()) + " nodes, " +
               std::to_string(self.graph.parameter_count()) + " parameters" + (is_quantized(self.graph) ? ", quantized" : "") + ">";
      });

  nb::class_<Data>(m, "Dataset",
                   "Labelled training and test samples: the four IDX files of a folder (Fashion-MNIST's layout), or numpy\n"
                   "arrays: uint8 image bytes, or float32 values of any sample shape, with integer labels.\n\n"
                   "    data = lowbit.Dataset(lowbit.default_dataset_dir())\n"
                   "    data = lowbit.Dataset(x_train, y_train, x_test, y_test)   # arrays are shared, not copied")
      .def("__init__", [](Data* self, const std::string& folder) {
             Data d;
             {
               nb::gil_scoped_release unlocked;
               d = load_data(folder);
             }
             new (self) Data(std::move(d));
           }, "folder"_a, "Reads train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-... (plain or .gz) from `folder`.")
      .def("__init__", [](Data* self, nb::handle x_train, nb::handle y_train, nb::handle x_test, nb::handle y_test, int num_classes) {
             new (self) Data(data_from_arrays(x_train, y_train, x_test, y_test, num_classes));
           }, "x_train"_a.none(), "y_train"_a.none(), "x_test"_a.none(), "y_test"_a.none(), "num_classes"_a = 0,
           "Arrays [count, ...sample shape] (float32 or uint8; C-contiguous arrays are shared, others copied once) and\n"
           "1-D integer labels in 0 .. num_classes - 1 (num_classes 0: 1 + the largest label).")
      .def_static("from_npz", [](const std::string& path) {
             Data d;
             {
               nb::gil_scoped_release unlocked;
               d.splits.train = read_npz_dataset(path);
             }
             return d;
           }, "path"_a,
           "Unlabelled named inputs for calibration (quantize's calibration, GPTQ, smooth) of a model whose inputs are\n"
           "not one image, e.g. a BERT's input_ids, attention_mask, token_type_ids: every array of an .npz (or an .npy),\n"
           "each [count, ...], fed to the model's input of the same name. No labels and no test split: it cannot train,\n"
           "evaluate or validate a search.")
      .def_prop_ro("input_names", [](const Data& d) {
             std::vector<std::string> names;
             for (const auto& [name, t] : d.splits.train.inputs) names.push_back(name);
             return names;
           }, "The named inputs (Dataset.from_npz), or [] for images.")
      .def_prop_ro("name", [](const Data& d) { return d.name; }, "The folder's name, or '' for arrays.")
      .def_prop_ro("train_size", [](const Data& d) { return d.splits.train.size(); })
      .def_prop_ro("test_size", [](const Data& d) { return d.splits.test.size(); })
      .def_prop_ro("num_classes", [](const Data& d) { return d.splits.train.num_classes; })
      .def_prop_ro("sample_shape", [](const Data& d) { return d.splits.train.sample_shape(); })
      .def_prop_ro("dtype", [](const Data& d) { return std::string(d.splits.train.images.dtype() == DType::U8 ? "uint8" : "float32"); })
      .def("arrays", [](const Data& d, const std::string& split) {
             if (!d.splits.train.inputs.empty()) bad_argument("arrays: this dataset holds named inputs (Dataset.from_npz), not images");
             const Dataset& s = split_of(d, split);
             return nb::make_tuple(array_from_tensor(s.images), array_from_vector(s.labels));
           }, "split"_a = "train", "(samples, labels) of the split as numpy arrays (sharing the dataset's memory).")
      .def("__repr__", [](const Data& d) {
        if (!d.splits.train.inputs.empty()) {
          std::string names;
          for (const auto& [name, t] : d.splits.train.inputs) names += (names.empty() ? "" : ", ") + name;
          return "<lowbit.Dataset: " + std::to_string(d.splits.train.size()) + " unlabelled samples of inputs " + names + ">";
        }
        return "<lowbit.Dataset" + (d.name.empty() ? std::string() : " '" + d.name + "'") + ": " +
               std::to_string(d.splits.train.size()) + " train, " + std::to_string(d.splits.test.size()) + " test samples of " +
               to_string(d.splits.train.sample_shape()) + ", " + std::to_string(d.splits.train.num_classes) + " classes>";
      });

  nb::class_<Calibration>(m, "Calibration", "Activation ranges observed on calibration data (lowbit calibrate's ranges file).")
      .def_ro("method", &Calibration::method)
      .def_ro("samples", &Calibration::samples)
      .def_prop_ro("ranges", [](const Calibration& c) {
             nb::dict d;
             for (const auto& [name, r] : c.ranges) d[name.c_str()] = nb::make_tuple(r.min, r.max);
             return d;
           }, "{value name: (min, max)}")
      .def("save", [](const Calibration& c, const std::string& path) { save_calibration(c, path); }, "path"_a,
           "Writes the ranges file (JSON), atomically.");

  m.def("default_dataset_dir", &default_dataset_dir, "The folder of the default dataset (Fashion-MNIST, or LOWBIT_DATA).");
  m.def("num_threads", &num_threads, "Worker threads lowbit computes with.");
  m.def("set_num_threads", &set_num_threads, "threads"_a, "Sets the worker threads (as --threads or LOWBIT_NUM_THREADS).");

  m.def("load", [](const std::string& path) { return read_model(path, [](const std::string& p) { return open_model(p); }); },
        "path"_a,
        "Reads a model: a native file (.lbm) or an ONNX file (.onnx, imported) (as every CLI --model).");
  m.def("save", [](const Model* model, const std::string& path) {
          const Graph& g = graph_of(model, "model");
          nb::gil_scoped_release unlocked;
          save_model(g, path);
        }, "model"_a.none(), "path"_a, "Writes `model` as a native model file (.lbm), atomically.");
  m.def("load_calibration", &load_calibration, "path"_a, "Reads a ranges file (lowbit calibrate --out).");

  m.def("train", [](const Data& data, nb::handle arch, int epochs, int batch_size, float lr, const std::string& optimizer_name,
                    float momentum, const std::string& lr_schedule, uint64_t seed, double validation_split, int64_t train_samples,
                    nb::object callback, bool progress, std::optional<std::string> checkpoint_dir, int64_t checkpoint_every,
                    bool resume) {
          check_positive(epochs, "epochs");
          check_positive(batch_size, "batch_size");
          if (!(validation_split >= 0 && validation_split <= 0.99))
            bad_argument("validation_split must be in [0, 0.99], got " + std::to_string(validation_split));
          if (train_samples < 0) bad_argument("train_samples must be >= 0 (0: all), got " + std::to_string(train_samples));
          TrainRunOptions run;
          run.arch = arch_from(arch, "arch");
          run.train_samples = train_samples;
          run.train.epochs = epochs;
          run.train.batch_size = batch_size;
          run.train.optimizer = optimizer(optimizer_name, lr, momentum, lr_schedule);
          run.train.seed = seed;
          run.train.validation_split = validation_split;
          Checkpoints checkpoints;
          checkpoints.apply(run.train, checkpoint_dir, checkpoint_every, resume);
          run.train.on_progress = progress_hook(callback, progress, "train", checkpoints.stop);
          if (!data.name.empty()) run.metadata["trained_on"] = data.name;
          TrainRunResult r;
          {
            nb::gil_scoped_release unlocked;
            r = run_train(data.splits, run);
          }
          nb::dict report;
          report["history"] = history_of(r.report);
          report["train_seconds"] = r.report.seconds;
          if (r.report.resumed_at_step >= 0) report["resumed_at_step"] = r.report.resumed_at_step;
          report["test_accuracy"] = r.test.accuracy;
          report["test_loss"] = r.test.loss;
          report["parameters"] = r.model.parameter_count();
          return Model{std::move(r.model), "", report};
        }, "data"_a, "arch"_a = "784-64-32-10", nb::kw_only(), "epochs"_a = 10, "batch_size"_a = 32, "lr"_a = 1e-3f,
        "optimizer"_a = "adam", "momentum"_a = 0.0f, "lr_schedule"_a = "constant", "seed"_a = 0, "validation_split"_a = 0.0,
        "train_samples"_a = 0, "callback"_a = nb::none(), "progress"_a = true, "checkpoint_dir"_a = nb::none(),
        "checkpoint_every"_a = 0, "resume"_a = false,
        "Trains a new model (as `lowbit train`): `arch` is layer sizes like \"784-64-32-10\" (input size first, classes\n"
        "last), a JSON model description (text or a .json path; see docs/model-description.md) or a dict. Adam or SGD,\n"
        "`seed` sets the initial weights and the shuffling: the same seed, data and threads give the same model bytes as\n"
        "the CLI. `callback(progress)` is called after every batch (a lowbit.Progress); without one a progress bar is\n"
        "shown unless progress=False. Ctrl-C stops at the next batch with lowbit.Interrupted (a KeyboardInterrupt).\n"
        "checkpoint_dir: resumable checkpoints there (checkpoint.lbm; best.lbm, the best validation epoch), every\n"
        "checkpoint_every steps (0: every epoch), and on Ctrl-C; resume=True continues from one (the same arguments give\n"
        "the same model bytes as a run never stopped). Returns the model; its report holds the history and the test accuracy.");

  m.def("evaluate", [](const Model* model, const Data& data, const std::string& split, int batch_size) {
          const Graph& g = graph_of(model, "model");
          check_positive(batch_size, "batch_size");
          const Dataset& s = split_of(data, split);
          EvalReport r;
          {
            nb::gil_scoped_release unlocked;
            r = evaluate(g, s, batch_size);
          }
          return eval_dict(r);
        }, "model"_a.none(), "data"_a, "split"_a = "test", "batch_size"_a = 256,
        "Accuracy, mean cross-entropy loss and sample count of `model` on a split: {'accuracy', 'loss', 'count'}.");

  m.def("predict", [](Model* model, nb::handle x, int batch_size) {
          const Graph& g = graph_of(model, "model");
          check_positive(batch_size, "batch_size");
          PredictOptions options;
          options.batch_size = batch_size;
          PredictResult r;
          if (nb::isinstance<Data>(x)) {
            const Data& data = nb::cast<const Data&>(x);
            nb::gil_scoped_release unlocked;
            r = predict(g, data.splits.test, options);
          } else {
            const Tensor batch = tensor_from_array(x, "x");
            nb::gil_scoped_release unlocked;
            std::unique_lock<std::mutex> lock(*model->predictor_lock, std::try_to_lock);
            if (!lock.owns_lock()) {
              r = predict(g, batch, options);
            } else {
              if (!model->predictor || model->predictor_batch != batch_size) {
                model->predictor = std::make_shared<Predictor>(g, options);
                model->predictor_batch = batch_size;
              }
              r = model->predictor->predict(batch);
            }
          }
          return nb::make_tuple(array_from_tensor(r.logits), array_from_vector(std::move(r.classes)));
        }, "model"_a.none(), "x"_a.none(), "batch_size"_a = 256,
        "(logits [N, classes] float32, classes [N] int32) for a batch `x` [N, ...the model's sample shape]: uint8 pixel\n"
        "values (scaled as the model's data was), or float32 values for a model with a float input; or for a\n"
        "Dataset's test split. A C-contiguous batch is read in place (no copy).");

  // bench/python_overhead.py: the C++ call lowbit.predict makes (a planned model's predict),
  // timed in C++ (the same model and batch, without Python), so that the difference to
  // lowbit.predict is the Python layer's cost.
  m.def("_predict_seconds", [](const Model* model, nb::handle x, int repeats) {
          const Graph& g = graph_of(model, "model");
          check_positive(repeats, "repeats");
          const Tensor batch = tensor_from_array(x, "x");
          nb::gil_scoped_release unlocked;
          Predictor predictor(g);
          double best = 1e30;
          for (int i = 0; i < repeats; ++i) {
            const auto start = std::chrono::steady_clock::now();
            PredictResult r = predictor.predict(batch);
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
          }
          return best;
        }, "model"_a.none(), "x"_a.none(), "repeats"_a, "Fastest of `repeats` C++ predict calls on `x`, in seconds (for bench/).");

  m.def("calibrate", [](const Model* model, const Data& data, const std::string& method, int64_t samples, double percentile) {
          const Graph& g = graph_of(model, "model");
          if (is_quantized(g)) bad_argument("calibrate: the model is already quantized: calibrate the float model");
          check_positive(samples, "samples");
          CalibrationOptions options;
          options.method = calibration_method_from_name(method);
          options.samples = samples;
          options.percentile = percentile;
          nb::gil_scoped_release unlocked;
          return calibrate(g, data.splits.train, options);
        }, "model"_a.none(), "data"_a, "method"_a = "minmax", "samples"_a = 1000, "percentile"_a = 99.99,
        "Observes activation ranges on the first `samples` training samples (as `lowbit calibrate`): method minmax,\n"
        "moving_average, percentile, mse or kl.");

  m.def("quantize", [](const Model* model, const Data* data, const std::string& mode, int bits, bool per_channel, int group_size,
                       std::optional<std::string> scheme,
                       const std::string& activations, const std::string& granularity, nb::handle ranges, const std::string& calib_method,
                       int64_t calib_samples, int64_t validation_samples, const std::string& layers, int keep_float,
                       const std::string& float_layers, std::optional<std::string> rounding, bool act_order, std::optional<double> smooth,
                       std::optional<double> max_drop, const std::string& objective, double time_budget, nb::handle plan, nb::object log) {
          const Graph& g = graph_of(model, "model");
          if (is_quantized(g)) bad_argument("quantize: the model is already quantized");
          check_bits(bits, "bits");
          if (granularity != "row" && granularity != "tensor")
            bad_argument("granularity must be \"row\" or \"tensor\", got \"" + granularity + "\"");
          if (objective != "size" && objective != "speed") bad_argument("objective must be \"size\" or \"speed\", got \"" + objective + "\"");
          check_positive(calib_samples, "calib_samples");
          QuantizeOptions q;
          q.mode = quant_mode_from_name(mode);
          q.weight_bits = bits;
          q.per_channel = per_channel;
          q.group_size = group_size;
          if (scheme) q.weight_scheme = scheme_named(*scheme, "scheme");
          if (rounding) q.rounding = *rounding;
          q.act_order = act_order;
          q.smooth_alpha = smooth;
          q.activation_scheme = scheme_named(activations, "activations");
          q.dynamic_granularity = granularity;
          q.calibration_method = calib_method;
          q.calibration_samples = calib_samples;
          q.validation_samples = validation_samples;
          q.layers = layers;
          q.keep_float = keep_float;
          q.float_layers = float_layers;
          q.max_drop = max_drop;
          q.objective = objective;
          q.time_budget_seconds = time_budget;
          if (!plan.is_none()) q.plan = plan_from(plan);
          apply_bit_width_defaults(q, scheme.has_value(), rounding.has_value(), data != nullptr);  // as the CLI
          if (!ranges.is_none()) {
            Calibration c = nb::isinstance<Calibration>(ranges) ? nb::cast<Calibration>(ranges)
                            : nb::isinstance<nb::str>(ranges)   ? load_calibration(nb::cast<std::string>(ranges))
                                                                : (bad_argument("ranges: expected a lowbit.Calibration or a ranges file's path"), Calibration{});
            q.ranges[c.method.empty() ? "minmax" : c.method] = c;
          }
          if (!log.is_none()) {
            auto held = std::make_shared<nb::object>(log);
            q.log = [held](const std::string& line) {
              nb::gil_scoped_acquire gil;
              (*held)(line);
            };
          }
          if (data) {
            q.calibration_data = &data->splits.train;
            if (data->splits.test.size() > 0) q.test_data = &data->splits.test;
          } else if (quantize_needs_data(q)) {
            bad_argument("quantize: mode \"" + mode + "\" with these options needs data (calibration" +
                         (max_drop ? std::string(", validation") : std::string()) + "): pass a lowbit.Dataset");
          }
          QuantizeResult r;
          {
            nb::gil_scoped_release unlocked;
            r = quantize(g, q);
          }
          q.log = nullptr;
          nb::dict report;
          report["mode"] = name_of(r.plan.mode);
          report["plan"] = json_value(r.plan.to_json());
          report["met"] = r.met;
          if (!r.sensitivity.empty()) report["sensitivity"] = sensitivity_list(r.sensitivity);
          if (r.search) {
            const SearchResult& s = *r.search;
            nb::dict sd;
            sd["met"] = s.met, sd["timed_out"] = s.timed_out, sd["validation_float_accuracy"] = s.float_accuracy;
            sd["validation_accuracy"] = s.accuracy, sd["validation_drop_points"] = s.drop_points;
            sd["validation_margin_points"] = s.margin_points, sd["evaluations"] = s.evaluations, sd["seconds"] = s.seconds;
            report["search"] = sd;
          }
          if (r.test) {
            report["float_test_accuracy"] = r.float_test->accuracy;
            report["test_accuracy"] = r.test->accuracy;
            report["drop_points"] = (r.float_test->accuracy - r.test->accuracy) * 100;
          }
          return Model{std::move(r.model), "", report};
        }, "model"_a.none(), "data"_a.none() = nb::none(), nb::kw_only(), "mode"_a = "full", "bits"_a = 8, "per_channel"_a = true,
        "group_size"_a = 0, "scheme"_a = nb::none(), "activations"_a = "affine", "granularity"_a = "row", "ranges"_a = nb::none(),
        "calib_method"_a = "minmax", "calib_samples"_a = 1000, "validation_samples"_a = 10000, "layers"_a = "", "keep_float"_a = 1,
        "float_layers"_a = "", "rounding"_a = nb::none(), "act_order"_a = false, "smooth"_a = nb::none(), "max_drop"_a = nb::none(), "objective"_a = "size", "time_budget"_a = 60.0, "plan"_a = nb::none(), "log"_a = nb::none(),
        "Quantizes a float model (as `lowbit quantize`). mode: \"full\" (integer-only: weights, biases, activations),\n"
        "\"partial\" (the layers named in `layers`, or all but the `keep_float` most sensitive), \"dynamic\" (activations\n"
        "quantized at run time per \"row\" or \"tensor\": `granularity`). float_layers: layers kept float in any mode\n"
        "(names or patterns, comma-separated; e.g. \"*.heads\": the attention, which full mode runs on int8). bits: weight bits 8, 6, 4, 3 or 2; per_channel or\n"
        "per tensor; group_size 32, 64 or 128: block weights (an fp16 scale per that many inputs of each output; Dense\n"
        "layers, 2-4 bits, f32 in and out, the input quantized per block at run time); scheme \"symmetric\" or \"affine\" weights; rounding \"nearest\" or \"gptq\" (error feedback through each\n"
        "Dense / Conv2D layer's input Hessian on the calibration samples; act_order: its columns by decreasing Hessian\n"
        "diagonal); smooth: SmoothQuant's strength alpha (static modes: activation outliers after each LayerNorm moved\n"
        "into the Dense weights reading it); scheme and rounding left out are chosen by bit\n"
        "width (gptq at 4 bits and below when `data` is given, affine at 3 and below); activations \"affine\" or \"symmetric\" (TensorRT). Static modes\n"
        "calibrate on `data`'s training split (calib_method, calib_samples) unless `ranges` (a Calibration or a ranges\n"
        "file) is given. max_drop: search per-layer rules within that accuracy drop (points) on the validation split (the\n"
        "last validation_samples training samples), for `objective` \"size\" or \"speed\" within time_budget seconds.\n"
        "plan: a plan (dict, JSON text or file) applied as it is. log(line) receives the search's progress. Returns the\n"
        "quantized model; its report holds the plan, the sensitivity, the search and (with data) both test accuracies.");

  m.def("dequantize", [](const Model* model) {
          const Graph& g = graph_of(model, "model");
          if (!is_quantized(g)) bad_argument("dequantize: the model is not quantized");
          return Model{dequantize_model(g), "", {}};
        }, "model"_a.none(), "The float model a quantized model computes (weights dequantized), as `lowbit dequantize`.");

  m.def("compare", [](const Model* model, const Model* against, const Data& data, int64_t layer_samples, bool speed) {
          const Graph& a = graph_of(model, "model");
          const Graph& b = graph_of(against, "against");
          check_positive(layer_samples, "layer_samples");
          CompareOptions options;
          options.layer_samples = layer_samples;
          options.measure_speed = speed;
          CompareResult r;
          {
            nb::gil_scoped_release unlocked;
            r = compare(a, b, data.splits.test, options);
          }
          nb::dict d;
          d["samples"] = r.samples, d["threads"] = num_threads();
          d["model_accuracy"] = r.model_accuracy, d["against_accuracy"] = r.against_accuracy, d["agreement"] = r.agreement;
          if (speed) {
            d["model_batch1_latency_us"] = r.model_speed.batch1_latency_us;
            d["against_batch1_latency_us"] = r.against_speed.batch1_latency_us;
            d["model_batch256_images_per_second"] = r.model_speed.batch256_images_per_second;
            d["against_batch256_images_per_second"] = r.against_speed.batch256_images_per_second;
          }
          nb::list layers;
          for (const auto& l : r.layers) {
            nb::dict ld;
            ld["layer"] = l.layer, ld["op"] = l.op, ld["against_op"] = l.against_op, ld["sqnr_db"] = l.error.sqnr_db;
            ld["cosine"] = l.error.cosine, ld["max_abs_error"] = l.error.max_abs, ld["mse"] = l.error.mse;
            layers.append(ld);
          }
          d["layers"] = layers;
          return d;
        }, "model"_a.none(), "against"_a.none(), "data"_a, "layer_samples"_a = 256, "speed"_a = true,
        "Compares two models on the test split (as `lowbit compare`): accuracies, prediction agreement, per-layer SQNR,\n"
        "cosine and error of every value both compute, and (speed=True) batch-1 latency and batch-256 throughput.");

  m.def("sweep", [](const Model* model, const Data& data, const std::string& out, std::vector<int> bits, std::vector<std::string> modes,
                    std::vector<std::string> rounding, std::vector<std::string> granularity, std::vector<double> max_drop,
                    double time_budget, int64_t calib_samples, int64_t validation_samples, bool speed) {
          const Graph& g = graph_of(model, "model");
          check_positive(calib_samples, "calib_samples");
          check_positive(validation_samples, "validation_samples");
          SweepOptions o;
          o.bits = std::move(bits);
          o.modes.clear();
          for (const auto& m : modes) o.modes.push_back(quant_mode_from_name(m));
          o.roundings = std::move(rounding);
          o.granularities = std::move(granularity);
          o.max_drops = std::move(max_drop);
          o.time_budget_seconds = time_budget;
          o.calibration_samples = calib_samples;
          o.validation_samples = validation_samples;
          o.measure_speed = speed;
          o.out_dir = out;
          o.model_path = model->source;
          std::string text;
          {
            nb::gil_scoped_release unlocked;
            const SweepResult r = run_sweep(g, data.splits, o);
            write_sweep_report(r, (std::filesystem::path(out) / "report.html").string());
            text = sweep_json(r);
          }
          return nb::module_::import_("json").attr("loads")(text);
        }, "model"_a.none(), "data"_a, "out"_a, nb::kw_only(), "bits"_a = std::vector<int>{8, 6, 4, 3, 2},
        "modes"_a = std::vector<std::string>{"full", "dynamic"}, "rounding"_a = std::vector<std::string>{"nearest", "gptq"},
        "granularity"_a = std::vector<std::string>{"per-channel"}, "max_drop"_a = std::vector<double>{}, "time_budget"_a = 0.0,
        "calib_samples"_a = 1000, "validation_samples"_a = 5000, "speed"_a = true,
        "Quantizes `model` in every combination of bits x modes x rounding x granularity (and an accuracy-driven search\n"
        "per max_drop), as `lowbit sweep`: each variant a model file in `out`, measured on the test split (accuracy, size,\n"
        "per-layer SQNR, cosine and sensitivity, batch-1 latency and batch-256 throughput unless speed=False), and\n"
        "out/report.html drawn from the figures. A sweep into the same folder reuses what an earlier one measured (same\n"
        "model, data and settings); time_budget (seconds, 0: none) stops starting variants. Returns the figures as a dict\n"
        "(the report's numbers, as `lowbit sweep --json`).");

  m.def("qat", [](const Model* model, const Data& data, int epochs, int batch_size, float lr, uint64_t seed, int bits, bool per_channel,
                  const std::string& scheme, std::optional<bool> lsq, nb::handle plan, int64_t observer_steps, int64_t calib_samples, int64_t train_samples,
                  const Model* teacher, float temperature, float alpha, const std::string& teacher_cache, nb::object callback, bool progress,
                  std::optional<std::string> checkpoint_dir, int64_t checkpoint_every, bool resume) {
          const Graph& g = graph_of(model, "model");
          if (is_quantized(g) || is_qat_model(g)) bad_argument("qat: the model is not a float model (QAT starts from a trained float model)");
          check_positive(epochs, "epochs");
          check_positive(batch_size, "batch_size");
          check_positive(calib_samples, "calib_samples");
          if (!(alpha >= 0 && alpha <= 1)) bad_argument("alpha must be in [0, 1], got " + std::to_string(alpha));
          QatRunOptions run;
          run.qat = qat_options(bits, per_channel, scheme, lsq, observer_steps, plan);
          run.calibration_samples = calib_samples;
          run.train.epochs = epochs;
          run.train.batch_size = batch_size;
          run.train.optimizer.learning_rate = lr;
          run.train.seed = seed;
          Checkpoints checkpoints;
          checkpoints.apply(run.train, checkpoint_dir, checkpoint_every, resume);
          run.train.on_progress = progress_hook(callback, progress, "qat", checkpoints.stop);
          if (teacher) {
            run.teacher = &teacher->graph;
            run.teacher_cache = teacher_cache;
            run.train.distill.temperature = temperature;
            run.train.distill.alpha = alpha;
          }
          QatRunResult r;
          {
            nb::gil_scoped_release unlocked;
            const Dataset train_data = train_samples > 0 ? data.splits.train.head(train_samples) : data.splits.train;
            r = run_qat(g, train_data, data.splits.test, run);
          }
          nb::dict report = qat_report(r);
          report["fake_quantized"] = Model{std::move(r.fake_quantized), "", {}};
          return Model{std::move(r.model), "", report};
        }, "model"_a.none(), "data"_a, nb::kw_only(), "epochs"_a = 3, "batch_size"_a = 32, "lr"_a = 1e-4f, "seed"_a = 0, "bits"_a = 4,
        "per_channel"_a = true, "scheme"_a = "symmetric", "lsq"_a = nb::none(), "plan"_a = nb::none(), "observer_steps"_a = -1,
        "calib_samples"_a = 1000, "train_samples"_a = 0, "teacher"_a = nb::none(), "temperature"_a = 4.0f, "alpha"_a = 0.7f,
        "teacher_cache"_a = "", "callback"_a = nb::none(), "progress"_a = true, "checkpoint_dir"_a = nb::none(),
        "checkpoint_every"_a = 0, "resume"_a = false,
        "Quantization-aware training (as `lowbit qat`): calibrates, inserts fake quantization (bits, per_channel, scheme,\n"
        "or a plan), fine-tunes for `epochs` (Adam, lr), learning the step sizes with lsq=True (None: by bit width,\n"
        "on at 3 bits and below), and converts to the integer model, which it returns. With a teacher, training distils from it (temperature, alpha; its logits cached in the\n"
        "file teacher_cache when given). checkpoint_dir, checkpoint_every and resume as in train(). The report holds both\n"
        "accuracies and the fake-quantized model.");

  m.def("distill", [](const Model* teacher, const Data& data, nb::handle student, int epochs, int batch_size, float lr,
                      const std::string& lr_schedule, uint64_t seed, int64_t train_samples, float temperature, float alpha,
                      const std::string& teacher_cache, std::optional<int> bits, int qat_epochs, float qat_lr, bool per_channel,
                      const std::string& scheme, std::optional<bool> lsq, nb::handle plan, int64_t observer_steps, int64_t calib_samples,
                      nb::object callback, bool progress, std::optional<std::string> checkpoint_dir, int64_t checkpoint_every,
                      bool resume) {
          const Graph& t = graph_of(teacher, "teacher");
          if (epochs < 0) bad_argument("epochs must be >= 0, got " + std::to_string(epochs));
          check_positive(batch_size, "batch_size");
          if (!(alpha >= 0 && alpha <= 1)) bad_argument("alpha must be in [0, 1], got " + std::to_string(alpha));
          DistillRunOptions run;
          if (nb::isinstance<Model>(student)) {
            run.student = nb::cast<const Model&>(student).graph;
          } else {
            run.student_arch = arch_from(student, "student");
          }
          run.teacher_cache = teacher_cache;
          run.train_samples = train_samples;
          run.train.batch_size = batch_size;
          run.train.seed = seed;
          run.train.distill.temperature = temperature;
          run.train.distill.alpha = alpha;
          run.train.optimizer = optimizer("adam", lr, 0.0f, lr_schedule);
          run.train.epochs = epochs;
          Checkpoints checkpoints;
          checkpoints.apply(run.train, checkpoint_dir, checkpoint_every, resume);
          run.train.on_progress = progress_hook(callback, progress, "distill", checkpoints.stop);
          if (bits || !plan.is_none()) {
            check_positive(qat_epochs, "qat_epochs");
            check_positive(calib_samples, "calib_samples");
            QatRunOptions q;
            q.qat = qat_options(bits.value_or(4), per_channel, scheme, lsq, observer_steps, plan);
            q.train = run.train;
            q.calibration_samples = calib_samples;
            q.train.epochs = qat_epochs;
            q.train.optimizer.learning_rate = qat_lr;
            checkpoints.apply(q.train, checkpoint_dir, checkpoint_every, resume, "qat");
            q.train.on_progress = progress_hook(callback, progress, "qat", checkpoints.stop);
            run.quantize = q;
          }
          if (!data.name.empty()) run.metadata["trained_on"] = data.name;
          if (!teacher->source.empty()) run.metadata["distilled_from"] = std::filesystem::path(teacher->source).filename().string();
          DistillRunResult r;
          {
            nb::gil_scoped_release unlocked;
            r = run_distill(t, data.splits, run);
          }
          nb::dict report;
          report["teacher_test_accuracy"] = r.teacher_test.accuracy;
          report["float_test_accuracy"] = r.float_test.accuracy;
          report["history"] = history_of(r.report);
          report["parameters"] = r.parameters;
          report["teacher_cache_hit"] = r.teacher_cache_hit;
          if (r.qat) report.update(qat_report(*r.qat)), report["fake_quantized"] = Model{std::move(r.qat->fake_quantized), "", {}};
          return Model{std::move(r.student), "", report};
        }, "teacher"_a.none(), "data"_a, nb::kw_only(), "student"_a = "784-64-32-10", "epochs"_a = 10, "batch_size"_a = 32, "lr"_a = 1e-3f,
        "lr_schedule"_a = "constant", "seed"_a = 0, "train_samples"_a = 0, "temperature"_a = 4.0f, "alpha"_a = 0.7f,
        "teacher_cache"_a = "", "bits"_a = nb::none(), "qat_epochs"_a = 5, "qat_lr"_a = 1e-4f, "per_channel"_a = true,
        "scheme"_a = "symmetric", "lsq"_a = nb::none(), "plan"_a = nb::none(), "observer_steps"_a = -1, "calib_samples"_a = 1000,
        "callback"_a = nb::none(), "progress"_a = true, "checkpoint_dir"_a = nb::none(), "checkpoint_every"_a = 0,
        "resume"_a = false,
        "Knowledge distillation (as `lowbit distill`): trains `student` (an architecture, built with `seed`, or a float\n"
        "Model to fine-tune) on the teacher's soft predictions (temperature, alpha) for `epochs`; with `bits` (or a plan)\n"
        "then quantization-aware distillation for qat_epochs (lsq None: learned step sizes at 3 bits and below), returning the integer student. teacher_cache: a file for\n"
        "the teacher's logits ('' : computed once in memory). checkpoint_dir, checkpoint_every and resume as in train()\n"
        "(the quantization-aware phase's checkpoint is checkpoint-qat.lbm).");

  m.def("import_onnx", [](const std::string& path) { return read_model(path, [](const std::string& p) { return import_onnx(p); }); },
        "path"_a,
        "Imports an ONNX model (from PyTorch, ONNX Runtime's quantizer ...) as a lowbit model, as `lowbit import`.\n"
        "Unsupported ops are listed, all of them, in one lowbit.UnsupportedError.");
  m.def("export_onnx", [](const Model* model, const std::string& path, const std::string& profile, bool symmetric, int opset) {
          const Graph& g = graph_of(model, "model");
          OnnxExportOptions options;
          options.profile = onnx_profile_from_name(profile);
          options.symmetric = symmetric;
          options.opset = opset;
          nb::gil_scoped_release unlocked;
          return export_onnx(g, path, options).notes;
        }, "model"_a.none(), "path"_a, "profile"_a = "float", "symmetric"_a = false, "opset"_a = 0,
        "Writes `model` as ONNX (as `lowbit export`): profile \"float\", \"qdq\" or \"qoperator\"; symmetric activation grids\n"
        "for TensorRT; opset 0 means 13 (21 keeps 4-bit weights int4). Returns the notes on what the export changed.");
}

}  // namespace lowbit::python

NB_MODULE(_lowbit, m) {
  m.doc() = "lowbit: train, quantize and run neural networks fast on the CPU (the C++ library, over numpy).";
  m.attr("__version__") = LOWBIT_VERSION;
  lowbit::python::init_numpy();
  lowbit::python::register_errors(m);
  lowbit::python::bind(m);
}
