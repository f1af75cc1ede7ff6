#include "lowbit/workspace.h"

#include <algorithm>
#include <cstdint>

namespace lowbit {

namespace {

size_t round_up(size_t bytes, size_t to) { return (bytes + to - 1) / to * to; }

// Allocates `size` usable bytes plus room to start them on an `alignment` boundary; returns the start.
std::byte* allocate_aligned(std::unique_ptr<std::byte[]>& memory, size_t size, size_t alignment) {
  memory = std::make_unique<std::byte[]>(size + alignment);
  const auto address = reinterpret_cast<std::uintptr_t>(memory.get());
  return memory.get() + (round_up(address, alignment) - address);
}

}  // namespace

void* Workspace::take_bytes(size_t bytes) {
  bytes = round_up(bytes == 0 ? 1 : bytes, kAlignment);
  if (blocks_.empty() || used_ + bytes > blocks_.back().size) {
    // A new block; the ones before keep the buffers already taken. reset() merges them.
    Block b;
    b.size = std::max(bytes, blocks_.empty() ? size_t{0} : blocks_.back().size);
    b.start = allocate_aligned(b.memory, b.size, kAlignment);
    blocks_.push_back(std::move(b));
    used_ = 0;
  }
  void* p = blocks_.back().start + used_;
  used_ += bytes;
  return p;
}

void Workspace::reset() {
  if (blocks_.size() > 1) {
    // The last call needed several blocks: one block of the bytes they held serves it next time.
    Block b;
    b.size = capacity();
    b.start = allocate_aligned(b.memory, b.size, kAlignment);
    blocks_.clear();
    blocks_.push_back(std::move(b));
  }
  used_ = 0;
}

size_t Workspace::capacity() const {
  size_t total = 0;
  for (const Block& b : blocks_) total += b.size;
  return total;
}

}  // namespace lowbit
