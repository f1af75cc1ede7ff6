// libFuzzer target: the ONNX importer on arbitrary bytes. Any input must give a model or a
// lowbit::Error; a crash, a hang, a sanitizer report or an allocation beyond libFuzzer's limit is a
// bug. Seeds: the .onnx files of tests/data/onnx and ONNX's node tests (tests/fuzz/run_fuzzers.sh).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "lowbit/error.h"
#include "lowbit/onnx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    lowbit::import_onnx_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.onnx", "");
  } catch (const lowbit::Error&) {
    // a clear error is the expected outcome for most inputs
  }
  return 0;
}
