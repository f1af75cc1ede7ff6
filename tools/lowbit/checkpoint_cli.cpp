// Checkpoint options and the signals that stop training (commands.h).
#include <csignal>
#include <filesystem>
#include <regex>

#include <fmt/format.h>

#include "commands.h"
#include "lowbit/error.h"

namespace lowbit::cli {
namespace {

std::atomic<bool> stop_requested{false};
volatile std::sig_atomic_t stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (stop_requested.load()) {  // the second one: stop now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  stop_signal = sig;
  stop_requested.store(true);
}

Communicator* g_world = nullptr;

}  // namespace

Communicator* world() { return g_world; }
void set_world(Communicator* w) { g_world = w; }
bool writes() { return !g_world || g_world->rank() == 0; }

void stop_training_on_signals() {
  static_assert(std::atomic<bool>::is_always_lock_free, "the signal handler needs a lock-free flag");
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

int interrupted_exit_code() { return 128 + (stop_signal ? static_cast<int>(stop_signal) : SIGINT); }

void CheckpointCli::add(CLI::App* cmd) {
  cmd->add_option("--checkpoint-dir", dir, "Write resumable checkpoints into this directory (created if missing)");
  cmd->add_option("--checkpoint-every", every, "How often: N steps (e.g. 500, 500steps) or N epochs (e.g. 1epoch); default every epoch");
  cmd->add_flag("--resume", resume, "Continue from the checkpoint in --checkpoint-dir (starts afresh when there is none)");
  cmd->add_option("--shards", shards,
                  "Data parallelism: cut every batch into N shards, trained on by the ranks of mpirun (default: one per rank). "
                  "The same --shards gives the same model bytes on any number of ranks that divides it")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--bucket-mb", bucket_mb,
                  "Data parallelism: send gradients in buckets of at least this many MiB, each as soon as the backward pass "
                  "completes it (default 1; a large value sends everything after the backward pass). Ranks on one machine "
                  "share their gradients in memory instead, unless --no-shared-memory")
      ->check(CLI::Range(1e-6, 1e6));
  cmd->add_flag("--no-shared-memory", no_shared_memory,
                "Data parallelism: send gradients with MPI even when every rank runs on one machine (by default those "
                "ranks write them into memory they all read, and each updates its piece of the weights)");
}

void CheckpointCli::apply(TrainOptions& options, const std::string& phase) {
  options.stop = &stop_requested;
  options.communicator = g_world;
  options.shards = shards > 0 ? shards : g_world ? g_world->size() : 1;
  options.bucket_bytes = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1048576.0));
  options.shared_memory = !no_shared_memory;
  if (dir.empty()) {
    if (resume) throw Error(ErrorKind::InvalidArgument, "--resume needs --checkpoint-dir (where the checkpoint is)");
    if (!every.empty()) throw Error(ErrorKind::InvalidArgument, "--checkpoint-every needs --checkpoint-dir");
    return;
  }
  if (!every.empty()) {
    static const std::regex form(R"(\s*([0-9]{1,12})?\s*(steps?|epochs?)?\s*)");
    std::smatch m;
    if (!std::regex_match(every, m, form) || (!m[1].matched && !m[2].matched))
      throw Error(ErrorKind::InvalidArgument, "--checkpoint-every '" + every + "': expected N steps or N epochs (e.g. 500, 500steps, 2epochs)");
    const int64_t n = m[1].matched ? std::stoll(m[1].str()) : 1;
    if (n < 1) throw Error(ErrorKind::InvalidArgument, "--checkpoint-every '" + every + "': expected at least 1");
    if (m[2].matched && m[2].str().rfind("epoch", 0) == 0) {
      if (n > (1 << 30)) throw Error(ErrorKind::InvalidArgument, "--checkpoint-every '" + every + "': too many epochs");
      options.checkpoint_every_epochs = static_cast<int>(n);
    } else {
      options.checkpoint_every_steps = n;
    }
  }
  files.push_back(std::make_unique<CheckpointFile>(CheckpointFile::in_directory(dir, phase)));
  options.checkpoints = files.back().get();
  options.resume = resume;
}

std::string CheckpointCli::communication(const TrainReport& r, const std::string& phase) {
  if (!g_world || g_world->size() < 2 || r.buckets == 0) return "";
  const std::string how = r.shared_memory ? "gradients and weights shared in memory (each rank updates its piece)"
                                           : fmt::format("{} gradient bucket(s) per step", r.buckets);
  return fmt::format("{}data parallel on {} ranks: {}; rank {} spent {:.2f} s communicating ({:.0f}% of {:.2f} s)",
                     phase.empty() ? "" : phase + ": ", g_world->size(), how, g_world->rank(), r.communication_seconds,
                     100.0 * r.communication_seconds / std::max(1e-9, r.seconds), r.seconds);
}

std::string CheckpointCli::describe() const {
  if (dir.empty()) return "";
  return "checkpoints in " + dir + (every.empty() ? " every epoch" : " every " + every) + (resume ? " (resuming)" : "");
}

}  // namespace lowbit::cli
