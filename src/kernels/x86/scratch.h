// Internal to the x86 kernel files: a grow-only, 64-byte aligned scratch array. Internal linkage
// on purpose: each kernel file is compiled with its own ISA flags, and no code compiled with
// AVX2 or AVX-512 flags may be picked by the linker for a file that runs without them.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace lowbit::kernels {
namespace {

template <typename T>
struct Buffer {
  T* data = nullptr;
  size_t capacity = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data); }
  bool reserve(size_t count) {
    if (count <= capacity) return true;
    void* p = std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64);
    if (!p) return false;
    std::free(data);
    data = static_cast<T*>(p);
    capacity = count;
    return true;
  }
};

}  // namespace
}  // namespace lowbit::kernels
