// lowbit/mpi.h: MPI_COMM_WORLD as a Communicator, or, in a build without MPI, a clear refusal.
#include "lowbit/mpi.h"

#include <climits>
#include <cstdlib>

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

MpiSession::MpiSession() {
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    throw Error(ErrorKind::Io, "MPI_Init_thread failed");
}
MpiSession::~MpiSession() { MPI_Finalize(); }

MpiCommunicator::MpiCommunicator() {
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

void MpiCommunicator::all_gather(std::span<const float> mine, std::span<float> all) {
  if (mine.size() > static_cast<size_t>(INT_MAX) || all.size() != mine.size() * static_cast<size_t>(size_))
    throw Error(ErrorKind::InvalidArgument, "all_gather: " + std::to_string(mine.size()) + " values per rank do not fit " +
                                                std::to_string(all.size()) + " (or exceed MPI's int counts)");
  MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, all.data(), static_cast<int>(mine.size()), MPI_FLOAT,
                MPI_COMM_WORLD);
}

#else

[[noreturn]] static void no_mpi() {
  throw Error(ErrorKind::Unsupported, "this build of lowbit has no MPI (configure with LOWBIT_WITH_MPI=ON and Open MPI's "
                                      "libopenmpi-dev installed)");
}
MpiSession::MpiSession() { no_mpi(); }
MpiSession::~MpiSession() = default;
MpiCommunicator::MpiCommunicator() { no_mpi(); }
void MpiCommunicator::all_gather(std::span<const float>, std::span<float>) { no_mpi(); }

#endif

}  // namespace lowbit
