// lowbit/mpi.h - data-parallel training over MPI: the ranks of `mpirun -np N` as a Communicator.
//
//   lowbit::MpiSession mpi;                        // MPI_Init (MPI_Finalize when it goes)
//   lowbit::MpiCommunicator world;                 // MPI_COMM_WORLD
//   lowbit::TrainOptions options;
//   options.communicator = &world;
//   options.shards = 4;                            // the same model bytes on 1, 2 or 4 ranks
//   lowbit::train(model, data.train, options);     // every rank ends with the model; rank 0 checkpoints
//
// Built with MPI when CMake finds it (LOWBIT_WITH_MPI, on by default; Debian's libopenmpi-dev).
// Without it the classes exist but MpiSession throws Error(Unsupported) saying that this build has
// no MPI, so a program can say so clearly when launched on several ranks (launched_ranks()).
#pragma once

#include "lowbit/train.h"

namespace lowbit {

// Whether this build of lowbit has MPI.
bool mpi_built() noexcept;
// The number of ranks the launcher started (OMPI_COMM_WORLD_SIZE, PMI_SIZE), 1
// when there is none. Readable before MPI_Init, and in a build without MPI.
int launched_ranks() noexcept;

// Ends every rank of the job with `code` (MPI_Abort): for a rank that fails while the others may be
// waiting for it in a collective. Without MPI, exits with `code`.
[[noreturn]] void abort_all_ranks(int code);

// MPI_Init_thread (funneled: only the thread that made the session calls MPI) and, when it goes,
// MPI_Finalize. One per process.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

// MPI_COMM_WORLD. all_gather is MPI_Allgather of floats; an MPI error ends the job (MPI's default
// handler), so a rank that dies makes the others stop rather than wait.
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator();
  ~MpiCommunicator() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_gather(std::span<const float> mine, std::span<float> all) override;
  void all_gather(std::span<const double> mine, std::span<double> all) override;
  // MPI_Iallgather, MPI_Wait; progress() tests the gathers in flight (MPI_Testall).
  int start_all_gather(std::span<const float> mine, std::span<float> all) override;
  void wait(int handle) override;
  void progress() override;
  // When every rank runs on one machine: an MPI-3 shared-memory window; sync() is a barrier.
  std::unique_ptr<SharedFloats> share(size_t count) override;

 private:
  int rank_ = 0, size_ = 1;
  struct Requests;  // the gathers in flight (MPI_Request: mpi.h stays out of this header)
  std::unique_ptr<Requests> requests_;
};

}  // namespace lowbit
