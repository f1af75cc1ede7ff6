// LocalGroup (train.h): the ranks of a data-parallel run as threads of one process.
#include <algorithm>
#include <barrier>
#include <cstring>
#include <memory>

#include "lowbit/train.h"

namespace lowbit {

struct LocalGroup::Shared {
  explicit Shared(int n) : size(n), sync(n), parts(static_cast<size_t>(n)), counts(static_cast<size_t>(n)) {}
  int size;
  std::barrier<> sync;
  std::vector<std::span<const std::byte>> parts;  // each rank's contribution, between the two barriers
  std::vector<size_t> counts;                       // what each rank asked share() for
  std::shared_ptr<std::vector<float>> block;        // the memory share() hands out, between its barriers
};

namespace {
// The threads of a group share their process's memory: the barrier orders their reads and writes.
class LocalShared final : public SharedFloats {
 public:
  LocalShared(std::shared_ptr<std::vector<float>> block, std::barrier<>& sync) : block_(std::move(block)), sync_(sync) {}
  std::span<float> values() override { return *block_; }
  void sync() override { sync_.arrive_and_wait(); }

 private:
  std::shared_ptr<std::vector<float>> block_;
  std::barrier<>& sync_;
};

class LocalMember final : public Communicator {
 public:
  LocalMember(LocalGroup::Shared& shared, int rank) : shared_(shared), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return shared_.size; }
  void all_gather(std::span<const float> mine, std::span<float> all) override { gather(std::as_bytes(mine), std::as_writable_bytes(all)); }
  void all_gather(std::span<const double> mine, std::span<double> all) override { gather(std::as_bytes(mine), std::as_writable_bytes(all)); }
  std::unique_ptr<SharedFloats> share(size_t count) override;

 private:
  void gather(std::span<const std::byte> mine, std::span<std::byte> all);
  LocalGroup::Shared& shared_;
  int rank_;
};
}  // namespace

LocalGroup::LocalGroup(int size) {
  if (size < 1) throw Error(ErrorKind::InvalidArgument, "a group needs at least one rank, got " + std::to_string(size));
  shared_ = std::make_unique<Shared>(size);
  for (int r = 0; r < size; ++r) members_.push_back(std::make_unique<LocalMember>(*shared_, r));
}
LocalGroup::~LocalGroup() = default;

Communicator& LocalGroup::member(int rank) {
  if (rank < 0 || rank >= size()) throw Error(ErrorKind::InvalidArgument, "no rank " + std::to_string(rank) + " in the group");
  return *members_[static_cast<size_t>(rank)];
}
int LocalGroup::size() const { return shared_->size; }

namespace {
void LocalMember::gather(std::span<const std::byte> mine, std::span<std::byte> all) {
  auto& s = shared_;
  s.parts[static_cast<size_t>(rank_)] = mine;
  s.sync.arrive_and_wait();
  bool fits = all.size() == mine.size() * static_cast<size_t>(s.size);
  for (const auto& part : s.parts) fits = fits && part.size() == mine.size();
  if (fits)
    for (int r = 0; r < s.size; ++r)
      if (all.data() + static_cast<size_t>(r) * mine.size() != s.parts[static_cast<size_t>(r)].data())  // (mine in place)
        std::memcpy(all.data() + static_cast<size_t>(r) * mine.size(), s.parts[static_cast<size_t>(r)].data(), mine.size());
  s.sync.arrive_and_wait();
  if (!fits) throw Error(ErrorKind::InvalidArgument, "all_gather: the ranks gave different lengths");
}

std::unique_ptr<SharedFloats> LocalMember::share(size_t count) {
  auto& s = shared_;
  s.counts[static_cast<size_t>(rank_)] = count;
  if (rank_ == 0) s.block = std::make_shared<std::vector<float>>(count);
  s.sync.arrive_and_wait();
  const bool same = std::all_of(s.counts.begin(), s.counts.end(), [&](size_t c) { return c == count; });
  auto block = s.block;
  s.sync.arrive_and_wait();  // (before anyone's next share replaces the block)
  if (!same) throw Error(ErrorKind::InvalidArgument, "share: the ranks asked for different sizes");
  return std::make_unique<LocalShared>(std::move(block), s.sync);
}
}  // namespace

}  // namespace lowbit
