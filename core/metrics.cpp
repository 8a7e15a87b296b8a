// Metrics log (JSONL, resumable) and the console progress line.
#include "core/metrics.hpp"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "core/atomic_file.hpp"
#include "core/check.hpp"
#include "core/decimal_between.hpp"

namespace gpt2cc {

namespace {
// Rewrites `path` with the lines keep(line) accepts, in order, atomically (a failed write, a full
// disk, names the file and leaves it as it was). Nothing when it cannot be read, or when it is a
// device or a pipe: a link to /dev/null has no lines to keep, and /dev/zero has no end. (A
// directory fails in the write, naming it.)
template <class Keep>
void keep_lines(const std::string& path, Keep&& keep) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::is_regular_file(status) && !std::filesystem::is_directory(status)) return;
  std::ifstream in(path, std::ios::binary);
  if (!in) return;
  std::string kept, line;
  while (std::getline(in, line))
    if (keep(line)) kept += line + "\n";
  in.close();
  write_file_atomic(path, kept);
}

// Keeps the lines of `path` whose "step" <= last_step. A line that is not a record this log wrote
// (a torn last line; no "step", or one that is not a whole number >= 0) is dropped.
void truncate_after_step(const std::string& path, int64_t last_step) {
  keep_lines(path, [&](const std::string& line) {
    const auto record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number_unsigned()) return false;
    return record["step"].get<uint64_t>() <= uint64_t(last_step);
  });
}

// The N of a samples.txt section line "=== step N ===", or nullopt for any other line; a step
// beyond 64 bits reads as the largest.
std::optional<uint64_t> section_step(std::string_view line) {
  return decimal_between(line, "=== step ", " ===", UINT64_MAX);
}
}  // namespace

void keep_samples_through_step(const std::string& path, int64_t last_step) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  if (last_step < 0) {
    std::filesystem::remove(path, ec);
    return;
  }
  bool keeping = true;  // a section's lines go with its "=== step N ===" line
  keep_lines(path, [&](const std::string& line) {
    if (const std::optional<uint64_t> step = section_step(line)) keeping = *step <= uint64_t(last_step);
    return keeping;
  });
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through_step) : path_(path) {
  if (keep_through_step >= 0) truncate_after_step(path, keep_through_step);
  file_ = std::fopen(path.c_str(), keep_through_step >= 0 ? "a" : "w");
  if (!file_) throw Error(format("cannot open metrics log {}: {}", path, std::strerror(errno)));
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::write(const nlohmann::json& record) {
  std::string line = record.dump() + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    throw Error(format("writing metrics log {} failed: {}", path_, std::strerror(errno)));
  }
}

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  auto total = static_cast<uint64_t>(s + 0.5);
  uint64_t h = total / 3600, m = total % 3600 / 60, sec = total % 60;
  char buf[32];
  if (h > 0) {
    std::snprintf(buf, sizeof buf, "%luh%02lum", static_cast<unsigned long>(h), static_cast<unsigned long>(m));
  } else if (m > 0) {
    std::snprintf(buf, sizeof buf, "%lum%02lus", static_cast<unsigned long>(m), static_cast<unsigned long>(sec));
  } else {
    std::snprintf(buf, sizeof buf, "%lus", static_cast<unsigned long>(sec));
  }
  return buf;
}

ProgressLine::ProgressLine(uint64_t every) : every_(every), tty_(::isatty(STDOUT_FILENO) == 1) {}

void ProgressLine::update(const ProgressInfo& p) {
  bool last = p.step == p.total_steps;
  bool plain_due = p.step % every_ == 0 || last || p.step == 1 || p.val_loss >= 0 || p.skipped;
  if (!tty_ && !plain_due) return;
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, "step %lu/%lu | loss %.4f | lr %.3e | %.0f tok/s",
                        static_cast<unsigned long>(p.step), static_cast<unsigned long>(p.total_steps), p.loss, p.lr,
                        p.tokens_per_s);
  std::string line(buf, static_cast<size_t>(std::max(n, 0)));
  if (p.mfu >= 0) {
    std::snprintf(buf, sizeof buf, " | MFU %.1f%%", 100 * p.mfu);
    line += buf;
  }
  line += " | ETA " + format_duration(p.eta_s);
  if (p.val_loss >= 0) line += format(" | val loss {} (ppl {})", p.val_loss, std::exp(p.val_loss));
  if (p.skipped) line += " | SKIPPED (non-finite)";
  if (tty_) {
    // \r + clear-to-end-of-line redraws in place; evaluation results stay on their own line.
    std::cout << "\r\033[K" << line << std::flush;
    open_line_ = true;
    if (p.val_loss >= 0 || p.skipped) {
      std::cout << "\n";
      open_line_ = false;
    }
  } else {
    std::cout << line << std::endl;
  }
}

void ProgressLine::message(const std::string& text) {
  finish();
  std::cout << text << std::endl;
}

void ProgressLine::finish() {
  if (open_line_) std::cout << "\n" << std::flush;
  open_line_ = false;
}

}  // namespace gpt2cc
