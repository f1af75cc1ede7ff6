// libFuzzer target: the native model file (.lbm) on arbitrary bytes, then planning an executor on
// what loaded (every op's prepare step sees the file's tensors: packing weights, checking shapes),
// and the training state of a checkpoint (a model file with TRST and TRTN sections, checkpoint.h).
// Any input must give a model or a lowbit::Error. The fuzz build skips the sections' CRC check
// (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) so that mutations reach the parsers behind it.
// Seeds: tests/data/*.lbm and format-v1; dictionary: dict/model_file.dict (tests/fuzz/run_fuzzers.sh).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lowbit/checkpoint.h"
#include "lowbit/error.h"
#include "lowbit/executor.h"
#include "lowbit/model_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lowbit::Graph g = lowbit::deserialize_model(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.lbm");
    lowbit::Executor plan(g);
  } catch (const lowbit::Error&) {
    // a clear error is the expected outcome for most inputs
  }
  try {
    lowbit::parse_train_state(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.lbm");
  } catch (const lowbit::Error&) {
  }
  return 0;
}
