// The lowbit subcommands. Each registers its options on the CLI11 app and returns the function
// that runs it; errors propagate as lowbit::Error and main() turns them into one line on stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/checkpoint.h"
#include "lowbit/train.h"

namespace lowbit::cli {

// --checkpoint-dir, --checkpoint-every, --resume and --shards of train, qat and distill
// (checkpoint_cli.cpp).
struct CheckpointCli {
  std::string dir, every;
  bool resume = false;
  int shards = 0;  // 0: one per rank
  double bucket_mb = 1.0;
  bool no_shared_memory = false;
  void add(CLI::App* cmd);
  // Points `options` at the checkpoint of `phase` in --checkpoint-dir (CheckpointFile::in_directory)
  // with the cadence of --checkpoint-every, at the ranks and shards, and at the stop flag that
  // SIGINT and SIGTERM set. Without --checkpoint-dir, no checkpoint.
  void apply(TrainOptions& options, const std::string& phase = "");
  // One line for the user: where checkpoints go and how often, or "" without --checkpoint-dir.
  std::string describe() const;
  // Under mpirun: one line on the data-parallel run (ranks, gradients shared in memory or sent in
  // buckets, time spent communicating); "" on one rank.
  static std::string communication(const TrainReport& report, const std::string& phase = "");
  std::vector<std::unique_ptr<CheckpointFile>> files;
};
// The ranks of `mpirun -np N lowbit ...` (main.cpp starts MPI): null on one rank. Rank 0 prints
// and writes the files; the others compute the same model and write nothing.
Communicator* world();
void set_world(Communicator* world);
bool writes();
// The first SIGINT or SIGTERM asks training to stop at its next step boundary (a second one ends
// the process at once); interrupted_exit_code() is 128 + that signal (130, 143).
void stop_training_on_signals();
int interrupted_exit_code();

// Runs the command; returns the exit code (0, or a command-specific code such as quantize's 3).
using Command = std::function<int()>;
Command add_train(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_predict(CLI::App& app);
Command add_info(CLI::App& app);
Command add_calibrate(CLI::App& app);
Command add_quantize(CLI::App& app);
Command add_dequantize(CLI::App& app);
Command add_compare(CLI::App& app);
Command add_sweep(CLI::App& app);
Command add_qat(CLI::App& app);
Command add_distill(CLI::App& app);
Command add_run(CLI::App& app);
#ifdef LOWBIT_HAVE_ONNX
Command add_import(CLI::App& app);
Command add_export(CLI::App& app);
#endif

}  // namespace lowbit::cli
