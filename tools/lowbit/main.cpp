// lowbit: the command-line tool. `lowbit --help` lists the subcommands.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <optional>
#include <set>
#include <string>

#include "commands.h"
#include "lowbit/error.h"
#include "lowbit/mpi.h"

// OpenMP reads its environment once, when the runtime loads, before main() runs. Kernels here
// fork and join many times per millisecond (batch-32 training), so a worker thread that the OS
// migrates between cores stalls every join: measured 1.7 s vs 2.3-3.3 s for the reference
// training run; a worker that sleeps between joins adds a wake-up to each. Unless the user chose
// otherwise, restart once with threads bound to cores and waiting actively (the tool is a
// short-lived compute process, so spinning between parallel regions costs nothing useful).
static void bind_threads_to_cores(char** argv) {
  if (std::getenv("OMP_PROC_BIND") || std::getenv("LOWBIT_NO_REEXEC")) return;
  if (lowbit::launched_ranks() > 1) return;  // several ranks on one machine: binding is the launcher's business
  setenv("OMP_PROC_BIND", "true", 1);
  if (!std::getenv("OMP_WAIT_POLICY")) setenv("OMP_WAIT_POLICY", "active", 1);
  setenv("LOWBIT_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then run unbound
}

// Exit codes (docs/errors.md): one per kind of failure, so that scripts can tell them apart.
constexpr int kExitInternal = 1;   // a bug in lowbit (ErrorKind::Internal) or out of memory
constexpr int kExitUsage = 2;      // the command line: unknown option, bad value (ErrorKind::InvalidArgument)
// 3: a target not met (quantize/sweep --max-drop): returned by those commands
constexpr int kExitBadInput = 4;   // a file's contents (ErrorKind::Format) or what this build cannot handle (Unsupported)
constexpr int kExitIo = 5;         // a file that cannot be opened, read or written (ErrorKind::Io)
// 128 + signal: training stopped by SIGINT (130) or SIGTERM (143), checkpoint written

static int exit_code(lowbit::ErrorKind kind) {
  switch (kind) {
    case lowbit::ErrorKind::InvalidArgument: return kExitUsage;
    case lowbit::ErrorKind::Format:
    case lowbit::ErrorKind::Unsupported: return kExitBadInput;
    case lowbit::ErrorKind::Io: return kExitIo;
    case lowbit::ErrorKind::Internal:
    case lowbit::ErrorKind::Interrupted: break;
  }
  return kExitInternal;
}

int main(int argc, char** argv) {
  bind_threads_to_cores(argv);
  // Under mpirun (or srun) with several ranks: MPI, rank 0 prints, every rank trains its shards.
  std::optional<lowbit::MpiSession> mpi;
  std::optional<lowbit::MpiCommunicator> world;
  if (const int ranks = lowbit::launched_ranks(); ranks > 1) {
    if (!lowbit::mpi_built()) {
      std::fprintf(stderr, "lowbit: error: launched on %d ranks, but this build of lowbit has no MPI (configure with "
                           "LOWBIT_WITH_MPI=ON and libopenmpi-dev installed)\n", ranks);
      return kExitUsage;
    }
    mpi.emplace();
    world.emplace();
    lowbit::cli::set_world(&*world);
    if (world->rank() != 0 && !std::freopen("/dev/null", "w", stdout)) return kExitIo;
  }
  CLI::App app{"lowbit: train, quantize and run small neural networks"};
  app.require_subcommand(1);
  std::map<CLI::App*, lowbit::cli::Command> commands;
  auto add = [&](lowbit::cli::Command (*make)(CLI::App&)) {
    size_t before = app.get_subcommands({}).size();
    lowbit::cli::Command run = make(app);
    commands[app.get_subcommands({})[before]] = run;
  };
  add(lowbit::cli::add_train);
  add(lowbit::cli::add_eval);
  add(lowbit::cli::add_predict);
  add(lowbit::cli::add_info);
  add(lowbit::cli::add_run);
  add(lowbit::cli::add_calibrate);
  add(lowbit::cli::add_quantize);
  add(lowbit::cli::add_dequantize);
  add(lowbit::cli::add_compare);
  add(lowbit::cli::add_sweep);
  add(lowbit::cli::add_qat);
  add(lowbit::cli::add_distill);
#ifdef LOWBIT_HAVE_ONNX
  add(lowbit::cli::add_import);
  add(lowbit::cli::add_export);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lowbit: error: %s (see lowbit --help)\n", e.what());
    return kExitUsage;
  }
  // A rank that fails ends the whole job: the others may be waiting for it in a collective. (A stop
  // by signal is agreed on by every rank at the same step, so they all end together anyway.)
  const std::string rank = world && world->size() > 1
                               ? " (rank " + std::to_string(world->rank()) + " of " + std::to_string(world->size()) + ")"
                               : "";
  auto fail = [&](const char* what, int code) {
    std::fflush(stdout);
    std::fprintf(stderr, "lowbit: error%s: %s\n", rank.c_str(), what);
    if (!rank.empty()) lowbit::abort_all_ranks(code);
    return code;
  };
  if (world && world->size() > 1)
    for (auto* sub : app.get_subcommands())
      if (!std::set<std::string>{"train", "qat", "distill", "calibrate", "sweep"}.count(sub->get_name())) {
        if (world->rank() == 0)
          std::fprintf(stderr, "lowbit: error: '%s' runs on one process; under mpirun lowbit runs train, qat, distill, calibrate "
                               "and sweep (launched on %d ranks)\n", sub->get_name().c_str(), world->size());
        return kExitUsage;
      }
  int code = 0;
  try {
    for (auto* sub : app.get_subcommands()) code = commands.at(sub)();
  } catch (const lowbit::Error& e) {
    std::fflush(stdout);
    if (e.kind() == lowbit::ErrorKind::Interrupted) {
      const bool saved = std::string(e.what()).find("checkpoint saved") != std::string::npos;
      std::fprintf(stderr, "lowbit: interrupted: %s%s\n", e.what(),
                   saved ? " (run the same command with --resume to continue)" : "");
      return lowbit::cli::interrupted_exit_code();
    }
    return fail(e.what(), exit_code(e.kind()));
  } catch (const std::bad_alloc&) {
    return fail("out of memory", kExitInternal);
  } catch (const std::exception& e) {
    return fail(e.what(), kExitInternal);
  }
  std::fflush(stdout);
  return code;
}
