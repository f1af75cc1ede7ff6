// lowbit/mpi.h: MPI_COMM_WORLD as a Communicator, or, in a build without MPI, a clear refusal.
#include "lowbit/mpi.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <vector>

#ifdef LOWBIT_HAVE_MPI
#include <mpi.h>
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

#endif

}  // namespace lowbit
