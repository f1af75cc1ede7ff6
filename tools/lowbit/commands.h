// The lowbit subcommands. Each registers its options on the CLI11 app and returns the function
// that runs it; errors propagate as lowbit::Error and main() turns them into one line on stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace lowbit::cli {

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
