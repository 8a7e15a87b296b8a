#include "common/test_common.hpp"

#include "common/catch.hpp"
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

#include "core/rng.hpp"

namespace gpt2cc::test {

namespace {
template <class F>
void expect_close_impl(const F* actual, const F* expected, size_t n, double atol, double rtol,
                       const std::string& what) {
  size_t bad = 0, worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < n; ++i) {
    double a = actual[i], e = expected[i];
    double tol = atol + rtol * std::fabs(e);
    bool ok = std::isfinite(a) && std::isfinite(e) && std::fabs(a - e) <= tol;
    if (!ok) {
      ++bad;
      double excess = std::isfinite(a) && std::isfinite(e) ? std::fabs(a - e) - tol : INFINITY;
      if (excess > worst_excess) {
        worst_excess = excess;
        worst = i;
      }
    }
  }
  if (bad) {
    std::ostringstream os;
    os << what << ": " << bad << " of " << n << " elements differ (atol " << atol << ", rtol " << rtol
       << "); worst at [" << worst << "]: got " << double(actual[worst]) << ", expected " << double(expected[worst]);
    FAIL_CHECK(os.str());
  } else {
    SUCCEED(what << ": " << n << " elements close");
  }
}
}  // namespace

void expect_close(const float* actual, const float* expected, size_t n, double atol, double rtol,
                  const std::string& what) {
  expect_close_impl(actual, expected, n, atol, rtol, what);
}

void expect_close(const double* actual, const double* expected, size_t n, double atol, double rtol,
                  const std::string& what) {
  expect_close_impl(actual, expected, n, atol, rtol, what);
}

void expect_close(const std::vector<float>& actual, const std::vector<float>& expected, double atol, double rtol,
                  const std::string& what) {
  REQUIRE(actual.size() == expected.size());
  expect_close_impl(actual.data(), expected.data(), actual.size(), atol, rtol, what);
}

double rel_error(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  if (!std::isfinite(num)) return INFINITY;
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  return rel_error(a.data(), b.data(), a.size());
}

std::vector<float> qkv_part(const std::vector<float>& x, int BT, int C, int part) {
  std::vector<float> out(static_cast<size_t>(BT) * C);
  for (int i = 0; i < BT; ++i)
    std::copy_n(&x[static_cast<size_t>(i) * 3 * C + part * C], C, &out[static_cast<size_t>(i) * C]);
  return out;
}

LayerNormInDouble layernorm_in_double(const std::vector<float>& x, const std::vector<float>& weight,
                                      const std::vector<float>& bias, size_t rows, int C) {
  LayerNormInDouble e{std::vector<double>(rows * C), std::vector<double>(rows), std::vector<double>(rows)};
  for (size_t r = 0; r < rows; ++r) {
    const float* row = x.data() + r * C;
    double m = 0.0, var = 0.0;
    for (int c = 0; c < C; ++c) m += row[c];
    m /= C;
    for (int c = 0; c < C; ++c) var += (row[c] - m) * (row[c] - m);
    const double s = 1.0 / std::sqrt(var / C + 1e-5);
    e.mean[r] = m;
    e.rstd[r] = s;
    for (int c = 0; c < C; ++c) e.out[r * C + c] = (row[c] - m) * s * weight[c] + bias[c];
  }
  return e;
}

std::vector<float> to_float(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

std::vector<float> random_vector(size_t n, uint64_t seed, float lo, float hi) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = lo + (hi - lo) * philox_uniform(seed, 0x7E57u, i);
  return v;
}

std::vector<int> random_tokens(size_t n, uint64_t seed, int vocab) {
  std::vector<int> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = int(philox_bits(seed, 0x70Cu, i) % uint32_t(vocab));
  return v;
}

void poison(float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = kPoison;
}

std::string source_dir() {
  if (const char* s = std::getenv("GPT2CC_SOURCE_DIR")) return s;
  return GPT2CC_TEST_SOURCE_DIR;
}

std::string data_dir() {
  std::string dir;
  if (const char* s = std::getenv("GPT2CC_DATA_DIR")) {
    dir = s;
  } else {
    dir = source_dir() + "/../shared/data";
  }
  return std::filesystem::is_directory(dir) ? dir : std::string();
}

std::string fixture_path(const std::string& name) { return source_dir() + "/tests/fixtures/" + name; }

ScopedEnv::ScopedEnv(std::string name, const std::optional<std::string>& value) : name_(std::move(name)) {
  if (const char* old = std::getenv(name_.c_str())) old_ = old;
  set(value);
}

ScopedEnv::~ScopedEnv() {
  // CHECK, not set()'s REQUIRE: a destructor must not throw.
  if (old_)
    CHECK(setenv(name_.c_str(), old_->c_str(), 1) == 0);
  else
    CHECK(unsetenv(name_.c_str()) == 0);
}

void ScopedEnv::set(const std::optional<std::string>& value) {
  if (value)
    REQUIRE(setenv(name_.c_str(), value->c_str(), 1) == 0);
  else
    REQUIRE(unsetenv(name_.c_str()) == 0);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string temp_dir(const std::string& name) {
  std::filesystem::path base;
  if (const char* b = std::getenv("GPT2CC_BINARY_DIR")) {
    base = std::filesystem::path(b) / "test-tmp";
  } else {
    base = std::filesystem::temp_directory_path() / "gpt2cc-test-tmp";
  }
  auto dir = base / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string shell_wait_in_fifo_open() {
  return "for i in $(seq 100); do grep -q -e partner -e fifo -e pipe /proc/$pid/wchan 2>/dev/null && break; "
         "sleep 0.1; done; ";
}

long peak_rss_kib() {
  rusage usage{};
  REQUIRE(getrusage(RUSAGE_SELF, &usage) == 0);
  return usage.ru_maxrss;
}

std::string ChildOutcome::summary() const {
  if (returned) return "returned";
  if (threw) return "threw: " + error;
  return "ended by signal " + std::to_string(signal) + (signal == SIGALRM ? " (SIGALRM: past its time limit)" : "");
}

ChildOutcome run_in_child(int seconds, const std::function<void()>& body, size_t address_space_bytes) {
  int pipe_fds[2];
  REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);  // no process body starts holds the write end
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::close(pipe_fds[0]);
    // The alarm must end the child, and a crash must not be reported by Catch2's handlers from
    // here: the parent reports. Default actions, SIGALRM unblocked.
    for (const int sig : {SIGALRM, SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) ::signal(sig, SIG_DFL);
    sigset_t alarm_only;
    sigemptyset(&alarm_only);
    sigaddset(&alarm_only, SIGALRM);
    ::sigprocmask(SIG_UNBLOCK, &alarm_only, nullptr);
    if (address_space_bytes > 0) {
      long pages = 0;
      std::ifstream("/proc/self/statm") >> pages;  // the address space in use, in pages
      const rlim_t bytes = rlim_t(pages) * rlim_t(::sysconf(_SC_PAGESIZE)) + rlim_t(address_space_bytes);
      const rlimit limit{bytes, bytes};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    ::alarm(unsigned(seconds));
    int status = 0;
    try {
      body();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      status = ::write(pipe_fds[1], what.data(), what.size()) == ssize_t(what.size()) ? 3 : 4;
    } catch (...) {
      status = 4;
    }
    ::_exit(status);  // no atexit handlers, no Catch2 reporting: the parent reports
  }
  ::close(pipe_fds[1]);
  ChildOutcome outcome;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    REQUIRE(n > 0);
    outcome.error.append(buffer, size_t(n));
  }
  ::close(pipe_fds[0]);
  int status = 0;
  rusage usage{};
  REQUIRE(::wait4(child, &status, 0, &usage) == child);
  outcome.peak_rss_kib = usage.ru_maxrss;
  if (WIFSIGNALED(status)) {
    outcome.signal = WTERMSIG(status);
  } else {
    REQUIRE(WIFEXITED(status));
    INFO("run_in_child: exit status " << WEXITSTATUS(status) << " (4: a throw that was not a std::exception)");
    REQUIRE((WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3));
    outcome.returned = WEXITSTATUS(status) == 0;
    outcome.threw = WEXITSTATUS(status) == 3;
  }
  return outcome;
}

}  // namespace gpt2cc::test
