// lowbit/mpi.h: MPI_COMM_WORLD as a Communicator, or, in a build without MPI, a clear refusal.
#include "lowbit/mpi.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <exception>
#include <limits>
#include <vector>

#ifdef LOWBIT_HAVE_MPI
#include <mpi.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <sched.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#endif

namespace lowbit {

bool mpi_built() noexcept {
#ifdef LOWBIT_HAVE_MPI
  return true;
#else
  return false;
#endif
}

int launched_ranks() noexcept {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {  // Open MPI's mpirun; MPICH / srun --mpi=pmi2
    if (const char* v = std::getenv(name)) {
      const int n = std::atoi(v);
      if (n >= 1) return n;
    }
  }
  return 1;
}

#ifdef LOWBIT_HAVE_MPI

void abort_all_ranks(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);  // (MPI_Abort does not return)
}

MpiSession::MpiSession() {
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw Error(ErrorKind::Io, "MPI_Init_thread failed");
}
MpiSession::~MpiSession() { MPI_Finalize(); }

struct MpiCommunicator::Requests {
  std::vector<MPI_Request> in_flight;
  std::vector<int> handles;  // in_flight's handles
  int next = 0;              // the next handle
};

MpiCommunicator::MpiCommunicator() : requests_(std::make_unique<Requests>()) {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}
MpiCommunicator::~MpiCommunicator() = default;

namespace {
// The send buffer: MPI_IN_PLACE when `mine` is this rank's part of `all`.
template <typename T>
const void* send_buffer(std::span<const T> mine, std::span<T> all, int rank, int size) {
  if (mine.size() > static_cast<size_t>(INT_MAX) || all.size() != mine.size() * static_cast<size_t>(size))
    throw Error(ErrorKind::InvalidArgument, "all_gather: " + std::to_string(mine.size()) + " values per rank do not fit " +
                                                std::to_string(all.size()) + " (or exceed MPI's int counts)");
  return mine.data() == all.data() + static_cast<size_t>(rank) * mine.size() ? MPI_IN_PLACE : mine.data();
}
}  // namespace

void MpiCommunicator::all_gather(std::span<const float> mine, std::span<float> all) {
  const void* send = send_buffer(mine, all, rank_, size_);
  MPI_Allgather(send, static_cast<int>(mine.size()), MPI_FLOAT, all.data(), static_cast<int>(mine.size()), MPI_FLOAT, MPI_COMM_WORLD);
}

void MpiCommunicator::all_gather(std::span<const double> mine, std::span<double> all) {
  const void* send = send_buffer(mine, all, rank_, size_);
  MPI_Allgather(send, static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), static_cast<int>(mine.size()), MPI_DOUBLE, MPI_COMM_WORLD);
}

int MpiCommunicator::start_all_gather(std::span<const float> mine, std::span<float> all) {
  const void* send = send_buffer(mine, all, rank_, size_);
  Requests& r = *requests_;
  r.in_flight.emplace_back();
  MPI_Iallgather(send, static_cast<int>(mine.size()), MPI_FLOAT, all.data(), static_cast<int>(mine.size()), MPI_FLOAT,
                 MPI_COMM_WORLD, &r.in_flight.back());
  r.handles.push_back(r.next);
  return r.next++;
}

void MpiCommunicator::wait(int handle) {
  Requests& r = *requests_;
  if (handle < 0 || handle >= r.next) throw Error(ErrorKind::InvalidArgument, "wait: no gather " + std::to_string(handle) + " was started");
  auto it = std::find(r.handles.begin(), r.handles.end(), handle);
  if (it == r.handles.end()) return;  // done already (by progress())
  const auto i = it - r.handles.begin();
  MPI_Wait(&r.in_flight[static_cast<size_t>(i)], MPI_STATUS_IGNORE);
  r.in_flight.erase(r.in_flight.begin() + i);
  r.handles.erase(it);
}

void MpiCommunicator::progress() {
  Requests& r = *requests_;
  if (r.in_flight.empty()) return;
  int done = 0;  // MPI_Testall completes all of them or none
  MPI_Testall(static_cast<int>(r.in_flight.size()), r.in_flight.data(), &done, MPI_STATUSES_IGNORE);
  if (done) r.in_flight.clear(), r.handles.clear();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// An MPI-3 shared-memory window over the ranks of one machine, held by rank 0 and mapped by all
// (MPI_Win_allocate_shared). Its first cache lines hold a barrier of its own (MPI_Barrier polls
// every transport of the job, several microseconds per step): a counter of arrivals and a
// generation, as lock-free atomics that order every rank's writes before every rank's reads. A
// rank that dies ends the job through mpirun, so a barrier never waits for the dead. A waiting
// rank spins while every rank has a core of its own, and yields its core when there are more
// ranks than cores (mpirun --oversubscribe), where spinning would hold up the rank it waits for.
class MpiSharedFloats final : public SharedFloats {
 public:
  static constexpr size_t kHeader = 32;  // floats before the values: two 64-byte lines
  MpiSharedFloats(MPI_Win win, float* base, size_t count, int ranks, bool spin)
      : win_(win), arrived_(*reinterpret_cast<uint32_t*>(base)), generation_(*reinterpret_cast<uint32_t*>(base + 16)),
        values_(base + kHeader), count_(count), ranks_(static_cast<uint32_t>(ranks)), spin_(spin) {}
  ~MpiSharedFloats() override {
    // Freeing is collective: a rank unwinding from an error must not wait for the others (they
    // may be waiting in sync() for it); it is about to end the job with abort_all_ranks.
    if (std::uncaught_exceptions() > 0) return;
    MPI_Win_unlock_all(win_);
    MPI_Win_free(&win_);
  }
  std::span<float> values() override { return {values_, count_}; }
  void sync() override {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == ranks_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (uint32_t i = 1; generation_.load(std::memory_order_acquire) == generation; ++i) {
      if (spin_ && i % 4096 != 0) cpu_relax();
      else sched_yield();
    }
  }

 private:
  MPI_Win win_;
  std::atomic_ref<uint32_t> arrived_, generation_;
  float* values_;
  size_t count_;
  uint32_t ranks_;
  bool spin_;
};
static_assert(std::atomic_ref<uint32_t>::is_always_lock_free, "the shared barrier needs lock-free atomics");
}  // namespace

std::unique_ptr<SharedFloats> MpiCommunicator::share(size_t count) {
  MPI_Comm node;  // the ranks that share this one's memory
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int node_size = 0;
  MPI_Comm_size(node, &node_size);
  MPI_Comm_free(&node);
  if (node_size != size_) return nullptr;  // several machines (the same answer on every rank)
  const size_t total = count + MpiSharedFloats::kHeader;
  if (count > static_cast<size_t>(std::numeric_limits<MPI_Aint>::max()) / sizeof(float) - MpiSharedFloats::kHeader)
    throw Error(ErrorKind::InvalidArgument, "share: " + std::to_string(count) + " floats exceed MPI's address range");
  // Open MPI backs the window with a file in /dev/shm; where that cannot hold it (containers often
  // give /dev/shm 64 MiB), the ranks send instead of failing. Every rank asks; all take the answer.
  struct statvfs shm;
  int fits = statvfs("/dev/shm", &shm) != 0 ||
             static_cast<double>(shm.f_bavail) * static_cast<double>(shm.f_frsize) >= static_cast<double>(total * sizeof(float)) + (1 << 20);
  MPI_Allreduce(MPI_IN_PLACE, &fits, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!fits) return nullptr;
  const MPI_Aint bytes = rank_ == 0 ? static_cast<MPI_Aint>(total * sizeof(float)) : 0;
  void* mine = nullptr;
  MPI_Win win;
  MPI_Win_allocate_shared(bytes, sizeof(float), MPI_INFO_NULL, MPI_COMM_WORLD, &mine, &win);
  MPI_Aint size = 0;
  int unit = 0;
  void* base = nullptr;
  MPI_Win_shared_query(win, 0, &size, &unit, &base);
  MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
  if (rank_ == 0) std::memset(base, 0, total * sizeof(float));
  MPI_Win_sync(win);
  MPI_Barrier(MPI_COMM_WORLD);  // (the header's zeros before anyone's first sync)
  MPI_Win_sync(win);
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return std::make_unique<MpiSharedFloats>(win, static_cast<float*>(base), count, size_, cores >= size_);
}

#else

[[noreturn]] static void no_mpi() {
  throw Error(ErrorKind::Unsupported, "this build of lowbit has no MPI (configure with LOWBIT_WITH_MPI=ON and Open MPI's "
                                      "libopenmpi-dev installed)");
}
void abort_all_ranks(int code) { std::exit(code); }
struct MpiCommunicator::Requests {};
MpiSession::MpiSession() { no_mpi(); }
MpiSession::~MpiSession() = default;
MpiCommunicator::MpiCommunicator() { no_mpi(); }
MpiCommunicator::~MpiCommunicator() = default;
void MpiCommunicator::all_gather(std::span<const float>, std::span<float>) { no_mpi(); }
void MpiCommunicator::all_gather(std::span<const double>, std::span<double>) { no_mpi(); }
int MpiCommunicator::start_all_gather(std::span<const float>, std::span<float>) { no_mpi(); }
void MpiCommunicator::wait(int) { no_mpi(); }
void MpiCommunicator::progress() { no_mpi(); }
std::unique_ptr<SharedFloats> MpiCommunicator::share(size_t) { no_mpi(); }

#endif

}  // namespace lowbit
