// lowbit/checkpoint.h - training checkpoints in a file, for runs that survive an interruption.
//
//   lowbit::CheckpointFile checkpoints("run/checkpoint.lbm");
//   lowbit::TrainOptions options;
//   options.checkpoints = &checkpoints;  // saved every epoch (or every options.checkpoint_every_steps)
//   options.resume = true;               // continue from run/checkpoint.lbm when it exists
//   lowbit::train(model, data.train, options);  // same model bytes as a run never stopped
//
// A checkpoint is a model file (docs/format.md): the model as it stands, loadable by load_model
// and every command that reads models, plus two optional sections that plain readers skip: TRST
// (the loop's position, totals, history and settings as JSON) and TRTN (the sample order and the
// optimizer's moments as named tensors). Every save writes a temporary file and renames it over
// the last one, so whatever stops the process (SIGKILL included), the file on disk is the
// previous checkpoint or the new one, whole.
#pragma once

#include <optional>
#include <string>

#include "lowbit/graph.h"
#include "lowbit/train.h"

namespace lowbit {

class CheckpointFile final : public Checkpointer {
 public:
  // `best_path`: where save_best writes the model of the best validation epoch ("": nowhere).
  explicit CheckpointFile(std::string path, std::string best_path = "")
      : path_(std::move(path)), best_path_(std::move(best_path)) {}
  // The layout of `--checkpoint-dir DIR` (CLI and Python): DIR/checkpoint.lbm and DIR/best.lbm, or
  // with a phase (distill's quantization-aware one: "qat") DIR/checkpoint-qat.lbm and
  // DIR/best-qat.lbm. Creates DIR (Error(Io) if it cannot).
  static CheckpointFile in_directory(const std::string& dir, const std::string& phase = "");
  // nullopt when the file does not exist. Removes the temporary files a killed save left beside it.
  // Error(InvalidArgument) when the checkpoint holds another graph than `model`, Error(Format) when
  // it is damaged.
  std::optional<TrainState> load(Graph& model) override;
  void save(const Graph& model, const TrainState& state) override;
  void save_best(const Graph& model, const TrainState& state) override;
  std::string where() const override { return path_; }

 private:
  std::string path_, best_path_;
};

// The training state in a checkpoint file's bytes (`source` names it in errors), without the
// model: nullopt for a model file that is not a checkpoint. Error(Format) when it is damaged.
std::optional<TrainState> parse_train_state(std::string_view bytes, const std::string& source);

}  // namespace lowbit
