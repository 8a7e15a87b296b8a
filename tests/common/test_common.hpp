// Helpers every test uses: one expect_close (atol + rtol*|ref|, NaN never passes), relative
// error, seeded random inputs, poisoning of outputs, and where the data and fixtures live.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace gpt2cc::test {

// Element-wise |actual - expected| <= atol + rtol * |expected| for all n; a NaN or Inf in either
// fails. Reports (through Catch2) the number of mismatches and the worst one with its index.
void expect_close(const float* actual, const float* expected, size_t n, double atol, double rtol,
                  const std::string& what);
void expect_close(const std::vector<float>& actual, const std::vector<float>& expected, double atol, double rtol,
                  const std::string& what);
void expect_close(const double* actual, const double* expected, size_t n, double atol, double rtol,
                  const std::string& what);

// ||a - b|| / ||b|| (L2), computed in double.
double rel_error(const float* a, const float* b, size_t n);
double rel_error(const std::vector<float>& a, const std::vector<float>& b);

// Part `part` (0 = q, 1 = k, 2 = v) of the first BT rows of a (B,T,3C) tensor, as (B,T,C).
std::vector<float> qkv_part(const std::vector<float>& x, int BT, int C, int part);

// LayerNorm's forward in double (two passes, eps 1e-5): the reference for float and bf16 kernels
// where float's own rounding is what is tested. x is rows x C; out, and each row's mean and rstd.
struct LayerNormInDouble {
  std::vector<double> out, mean, rstd;
};
LayerNormInDouble layernorm_in_double(const std::vector<float>& x, const std::vector<float>& weight,
                                      const std::vector<float>& bias, size_t rows, int C);
// Doubles rounded to floats.
std::vector<float> to_float(const std::vector<double>& v);

// Uniform in [lo, hi) from a counter-based generator: same values on every machine.
std::vector<float> random_vector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<int> random_tokens(size_t n, uint64_t seed, int vocab);
// Fills with NaN so an element an op forgets to write makes the comparison fail.
void poison(float* p, size_t n);
inline constexpr float kPoison = std::numeric_limits<float>::quiet_NaN();

// The project source directory (GPT2CC_SOURCE_DIR, set by ctest) and the shared data directory:
// $GPT2CC_DATA_DIR, else <source>/../shared/data. data_dir() is "" when it does not exist.
std::string source_dir();
std::string data_dir();
std::string fixture_path(const std::string& name);  // <source>/tests/fixtures/<name>
// A fresh empty directory under the build tree (or /tmp) for one test's files.
std::string temp_dir(const std::string& name);
// A file's bytes, as they are (the test fails where it cannot be opened).
std::string read_bytes(const std::string& path);
// A shell fragment (no single quotes: it goes inside sh -c '...') that waits until the process
// $pid blocks opening a FIFO, as a write held by a FIFO planted at its path does: its
// /proc/PID/wchan reads wait_for_partner (Linux 5+; fifo_open or pipe_wait before). 10 s at
// most, then it goes on, so a signal test never hangs.
std::string shell_wait_in_fifo_open();
// This process's peak resident memory so far (getrusage's ru_maxrss), in KiB.
long peak_rss_kib();

// How body() ended in run_in_child's process.
struct ChildOutcome {
  bool returned = false;  // body returned
  bool threw = false;     // body threw a std::exception, whose what() is `error`
  std::string error;
  int signal = 0;         // the signal that ended the process (SIGALRM: past the time limit)
  long peak_rss_kib = 0;  // the child's own peak resident memory
  // "returned", "threw: <error>" or "ended by signal N (...)", for a failing check's INFO.
  std::string summary() const;
};
// Runs body() in a forked child process, ended by SIGALRM after `seconds`: a test of code that
// could loop forever (a reader that misses the end of its input) fails in seconds instead of
// waiting for ctest's timeout. Catch2's assertions do not work inside body (the child's results
// are not reported): it throws or returns, and the test checks the outcome. Fork copies only the
// calling thread: body should not need OpenMP's threads if the test process already started them.
// `address_space_bytes` > 0 caps the child's address space beyond what it has at the fork.
ChildOutcome run_in_child(int seconds, const std::function<void()>& body, size_t address_space_bytes = 0);

// An environment variable set to `value` (nullopt: unset) for the object's lifetime, then put
// back as it was; set() changes it meanwhile. A failing setenv/unsetenv fails the test.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const std::optional<std::string>& value);
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv();
  void set(const std::optional<std::string>& value);

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Same size and the same bytes: equality bit for bit (a NaN equals itself, where == fails, and
// -0 differs from 0). For determinism and resume tests.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  // (memcmp must not see the null data() of empty vectors)
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

}  // namespace gpt2cc::test
