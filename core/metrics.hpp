// Run outputs for people and plots: the metrics log (one JSON object per line, appended as the
// run goes, so a crashed run keeps its curve) and the console progress line.
//   metrics.jsonl: {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_s", "ms_per_step",
//                   "skipped"} per step, plus "val_loss" and "val_ppl" on evaluation steps, and "mfu"
//                   where the GPU's peak is known (core/device_peaks.hpp).
// The progress line redraws in place on a terminal and prints plain lines otherwise.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace gpt2cc {

class MetricsLog {
 public:
  // Opens `path` for appending. keep_through_step >= 0 (resuming): records of later steps, which
  // the interrupted run wrote after its last checkpoint, are dropped first (atomic rewrite), so
  // the resumed run's records take their place. -1: start a new file.
  MetricsLog(const std::string& path, int64_t keep_through_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const nlohmann::json& record);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
};

// samples.txt ("=== step N ===" sections, train --sample-every) as a run starts: a resumed run
// (last_step >= 0) keeps the sections of steps up to its checkpoint's, which it does not write
// again; a new run (-1) starts without the file (one left by an earlier failed run).
void keep_samples_through_step(const std::string& path, int64_t last_step);

struct ProgressInfo {
  uint64_t step = 0, total_steps = 0;
  double loss = 0, lr = 0, tokens_per_s = 0, eta_s = 0;
  double val_loss = -1;  // < 0: none at this step
  double mfu = -1;       // < 0: unknown (the CPU, or a GPU without a known peak)
  bool skipped = false;
};

class ProgressLine {
 public:
  // every: print every N-th step as a plain line when stdout is not a terminal.
  explicit ProgressLine(uint64_t every);
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;
  void update(const ProgressInfo& info);
  // A message on its own line (ends a redrawn line first).
  void message(const std::string& text);
  void finish();

 private:
  uint64_t every_;
  bool tty_;
  bool open_line_ = false;
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace gpt2cc
