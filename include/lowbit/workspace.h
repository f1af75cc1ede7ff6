// lowbit/workspace.h - scratch memory that an executor lends to one node at a time.
//
// An op (or the kernel it calls) takes the temporary buffers of one call from the Workspace it is
// given instead of keeping thread_local vectors: quantized activations, im2col columns, a masked
// gradient. The executor owns one Workspace and resets it before each node, so the memory is
// reused from node to node and from run to run; after the first run, when the workspace has
// learned the largest need of any node, a run allocates nothing.
//
//   lowbit::Workspace ws;
//   float* columns = ws.take<float>(4096);        // uninitialized, 64-byte aligned
//   int32_t* sums = ws.take<int32_t>(64);        // another buffer; both valid until reset()
//   ws.reset();                                  // the next node reuses the memory
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <vector>

namespace lowbit {

class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;

  // `count` elements of T, 64-byte aligned and uninitialized, valid until reset(). Buffers taken
  // in one call never overlap.
  template <typename T>
  T* take(size_t count) {
    static_assert(std::is_trivially_copyable_v<T> && alignof(T) <= kAlignment);
    return static_cast<T*>(take_bytes(count * sizeof(T)));
  }
  // Frees every buffer for reuse. When the last call needed more than one block, the blocks are
  // merged into one of their total size, so the same need is met without allocating next time.
  void reset();
  // Bytes this workspace holds (its largest need so far, once reset).
  size_t capacity() const;

 private:
  static constexpr size_t kAlignment = 64;
  struct Block {
    std::unique_ptr<std::byte[]> memory;
    size_t size = 0;  // usable bytes from the aligned start
    std::byte* start = nullptr;
  };
  void* take_bytes(size_t bytes);
  std::vector<Block> blocks_;
  size_t used_ = 0;  // bytes taken from the last block
};

}  // namespace lowbit
