// Temporaries removed on a signal (core/signal_cleanup.hpp).
#include "core/signal_cleanup.hpp"

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <mutex>

namespace gpt2cc {
namespace {

constexpr int kSlots = 16;  // files a command may be writing at once (an export: 5, and 3 temporaries)
constexpr size_t kPathBytes = 4096;  // PATH_MAX on Linux
char g_paths[kSlots][kPathBytes];
volatile std::sig_atomic_t g_used[kSlots];
std::mutex g_slots_mutex;  // between threads that register; the handler only reads
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free, "a signal handler may only touch a lock-free atomic");

std::atomic<int> g_deferring{0};      // DeferSignalEnd objects alive
std::atomic<int> g_deferred_signal{0};  // the signal that came meanwhile, raised when the last ends

extern "C" void remove_temporaries_and_die(int sig) {
  if (g_deferring.load() > 0) {  // steps that must finish together are under way: end after them
    g_deferred_signal.store(sig);
    return;
  }
  for (int i = 0; i < kSlots; ++i)
    if (g_used[i]) ::unlink(g_paths[i]);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  ::sigaction(sig, &default_action, nullptr);
  ::raise(sig);  // pending until the handler returns; then the default action ends the program
}

extern "C" void record_stop_and_arm(int sig) {
  g_stop_signal.store(sig);
  remove_temporaries_on_signal();  // sigaction only: allowed in a handler
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = record_stop_and_arm;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // a read or write the signal interrupts goes on
  for (int sig : {SIGINT, SIGTERM}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler == SIG_IGN) continue;  // ignored at the start
    ::sigaction(sig, &action, nullptr);
  }
}

const std::atomic<int>& stop_signal() { return g_stop_signal; }

DeferSignalEnd::DeferSignalEnd() { g_deferring.fetch_add(1); }

DeferSignalEnd::~DeferSignalEnd() {
  if (g_deferring.fetch_sub(1) != 1) return;
  if (const int sig = g_deferred_signal.exchange(0)) ::raise(sig);  // now the handler ends the program
}

void request_stop(int signal) { g_stop_signal.store(signal); }

void remove_temporaries_on_signal() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler == SIG_IGN) continue;
    struct sigaction action {};
    action.sa_handler = remove_temporaries_and_die;
    sigemptyset(&action.sa_mask);
    for (int other : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&action.sa_mask, other);  // one at a time
    ::sigaction(sig, &action, nullptr);
  }
}

TemporaryFile::TemporaryFile(const std::string& path) {
  if (path.size() >= kPathBytes) return;
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (int i = 0; i < kSlots; ++i) {
    if (g_used[i]) continue;
    std::memcpy(g_paths[i], path.c_str(), path.size() + 1);
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the path is whole before the flag is set
    g_used[i] = 1;
    slot_ = i;
    return;
  }
}

TemporaryFile::~TemporaryFile() {
  if (slot_ < 0) return;
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  g_used[slot_] = 0;
}

}  // namespace gpt2cc
