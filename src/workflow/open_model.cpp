#include "lowbit/model_io.h"
#include "lowbit/workflow.h"
#ifdef LOWBIT_HAVE_ONNX
#include "lowbit/onnx.h"
#endif
#include "lowbit/error.h"

namespace lowbit {

Graph open_model(const std::string& path) {
  const bool onnx = path.size() >= 5 && path.compare(path.size() - 5, 5, ".onnx") == 0;
  if (!onnx) return load_model(path);
#ifdef LOWBIT_HAVE_ONNX
  return import_onnx(path);
#else
  throw Error(ErrorKind::Unsupported, path + ": this build of lowbit has no ONNX support (configure with -DLOWBIT_ONNX=ON)");
#endif
}

}  // namespace lowbit
