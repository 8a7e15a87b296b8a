// WorkerPool: threads that live as long as their owner (a Tokenizer), running batches of tasks.
// Why not fresh threads per call: the encoder keeps a pre-token cache per thread, and a new
// thread starts with an empty one (re-running BPE on every piece). run_all blocks until its own
// tasks are done and may be called from several threads at once.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gpt2cc::tok {

class WorkerPool {
 public:
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void run_all(std::vector<std::function<void()>>& tasks) {
    std::mutex done_mu;
    std::condition_variable done_cv;
    size_t remaining = tasks.size();
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (threads_.size() < tasks.size()) threads_.emplace_back([this] { work(); });
      for (auto& task : tasks)
        queue_.push_back([&task, &done_mu, &done_cv, &remaining] {
          task();
          std::lock_guard<std::mutex> l(done_mu);
          if (--remaining == 0) done_cv.notify_one();
        });
    }
    cv_.notify_all();
    std::unique_lock<std::mutex> l(done_mu);
    done_cv.wait(l, [&] { return remaining == 0; });
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

}  // namespace gpt2cc::tok
