// The process group and the host-memory collectives (core/distributed.hpp), over MPI when the
// build has it (GPT2CC_HAVE_MPI), a single process otherwise.
#include "core/distributed.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "core/bf16.hpp"
#include "core/check.hpp"

#ifdef GPT2CC_HAVE_MPI
#include <mpi.h>
#endif

namespace gpt2cc {

namespace {

// The first of `names` that is set, as an int (-1: none is set or it is not a number).
int env_int(std::initializer_list<const char*> names, std::string* which = nullptr) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') continue;
    char* end = nullptr;
    const long v = std::strtol(value, &end, 10);
    if (*end != '\0' || v < 0 || v > INT_MAX) continue;
    if (which != nullptr) *which = name;
    return int(v);
  }
  return -1;
}

#ifdef GPT2CC_HAVE_MPI
// The library's own name and version, e.g. "MPICH Version: 4.0.2 ...", first line.
std::string mpi_library() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string name(text, size_t(length));
  return name.substr(0, name.find('\n'));
}

// MPI_COMM_WORLD returns its errors (ProcessGroup::join sets MPI_ERRORS_RETURN) so that they
// come here: a rank's failure then ends as any other (its message, MPI_Abort with exit 1), not in
// the library's own abort (MPICH exited 15 with its error stack when a collective could not
// allocate its scratch, which it calls an "other" error; MPI_ERR_NO_MEM gets the memory hint).
void mpi_check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  const std::string message(text, size_t(length));
  int error_class = MPI_ERR_OTHER;
  MPI_Error_class(code, &error_class);
  if (error_class == MPI_ERR_NO_MEM)
    throw OutOfMemoryError(format("MPI {} failed: out of host memory: {}", what, message));
  throw Error(format("MPI {} failed: {}", what, message));
}
#define MPI_CALL(call) mpi_check((call), #call)

// MPI counts are ints: longer buffers go in pieces.
constexpr size_t kMpiChunk = size_t(1) << 30;
#endif

}  // namespace

LaunchInfo detect_launch() {
  LaunchInfo info;
  // Open MPI, MPICH / Intel MPI (Hydra's PMI), PMIx launchers, Slurm's srun (a job step's tasks).
  const int size = env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"}, &info.launcher);
  if (size < 1) return LaunchInfo{};
  info.size = size;
  info.rank = std::max(0, env_int({"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}));
  return info;
}

std::unique_ptr<ProcessGroup> ProcessGroup::single() { return std::unique_ptr<ProcessGroup>(new ProcessGroup()); }

std::unique_ptr<ProcessGroup> ProcessGroup::join(int* argc, char*** argv) {
  const LaunchInfo launch = detect_launch();
#ifdef GPT2CC_HAVE_MPI
  if (launch.size <= 1) return single();
  int initialized = 0;
  MPI_CALL(MPI_Initialized(&initialized));
  if (!initialized) {
    // Other threads run (OpenMP, the data prefetch, NCCL's proxies); only this one calls MPI.
    int provided = MPI_THREAD_SINGLE;
    MPI_CALL(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      fail_input("this MPI library does not allow threads in an MPI process (MPI_THREAD_FUNNELED), which gpt2cc "
                 "has (OpenMP, data loading, NCCL)");
    }
  }
  MPI_CALL(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));  // to mpi_check
  std::unique_ptr<ProcessGroup> group(new ProcessGroup());
  group->mpi_ = true;
  MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &group->rank_));
  MPI_CALL(MPI_Comm_size(MPI_COMM_WORLD, &group->size_));
  // Another MPI's launcher (Open MPI's mpirun for an MPICH build, or the reverse) starts
  // processes that each come up as a job of one: they would train alone into one run directory.
  INPUT_CHECK(group->size_ == launch.size,
              "the launcher started {} ranks ({} = {}), but MPI sees a job of {}: the mpiexec used is not the one "
              "of the MPI this gpt2cc was built with ({}); launch with that MPI's mpiexec",
              launch.size, launch.launcher, launch.size, group->size_, mpi_library());
  // The rank among those sharing this machine's memory: the launcher's variables are not
  // standard, MPI's shared-memory split is.
  MPI_Comm local;
  MPI_CALL(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, group->rank_, MPI_INFO_NULL, &local));
  MPI_CALL(MPI_Comm_rank(local, &group->local_rank_));
  MPI_CALL(MPI_Comm_size(local, &group->local_size_));
  MPI_Comm_free(&local);
  return group;
#else
  (void)argc;
  (void)argv;
  INPUT_CHECK(launch.size <= 1,
              "this process is rank {} of {} ({} is set by the launcher), but this build of gpt2cc has no MPI, so "
              "every rank would train alone into the same run directory: install MPI (Debian: libmpich-dev or "
              "libopenmpi-dev) and rebuild, or run one process without mpiexec",
              launch.rank, launch.size, launch.launcher);
  return single();
#endif
}

ProcessGroup::~ProcessGroup() {
#ifdef GPT2CC_HAVE_MPI
  if (mpi_) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
#endif
}

void ProcessGroup::all_reduce_sum(std::span<double> values) {
#ifdef GPT2CC_HAVE_MPI
  if (mpi_ && size_ > 1)
    MPI_CALL(MPI_Allreduce(MPI_IN_PLACE, values.data(), int(values.size()), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD));
#else
  (void)values;
#endif
}

bool ProcessGroup::any(bool flag) {
  double value = flag ? 1.0 : 0.0;
  all_reduce_sum(std::span<double>(&value, 1));
  return value > 0.0;
}

void ProcessGroup::broadcast(void* data, size_t bytes, int root) {
#ifdef GPT2CC_HAVE_MPI
  if (!mpi_ || size_ == 1) return;
  for (size_t done = 0; done < bytes; done += kMpiChunk) {
    const size_t n = std::min(kMpiChunk, bytes - done);
    MPI_CALL(MPI_Bcast(static_cast<char*>(data) + done, int(n), MPI_BYTE, root, MPI_COMM_WORLD));
  }
#else
  (void)data, (void)bytes, (void)root;
#endif
}

void ProcessGroup::gather(float* full, std::span<const float> part, int root) {
  if (!mpi_ || size_ == 1) {
    std::copy(part.begin(), part.end(), full);
    return;
  }
#ifdef GPT2CC_HAVE_MPI
  // Every rank's part has the same size: MPI_Gather lays them out as `full` wants them. A part is
  // one rank's block of the parameters, as in the reduce-scatter and all-gather below.
  const size_t n = part.size();
  ENSURE(n <= kMpiChunk, "gather: a part of {} floats is more than MPI takes at once", n);
  MPI_CALL(MPI_Gather(part.data(), int(n), MPI_FLOAT, full, int(n), MPI_FLOAT, root, MPI_COMM_WORLD));
#endif
}

void ProcessGroup::gather_parts(float* full, std::span<const float> part, std::span<const size_t> counts, int root) {
  ENSURE(counts.size() == size_t(size_) && part.size() == counts[size_t(rank_)],
         "gather_parts: {} counts for {} ranks, this rank's part {} floats where its count says {}", counts.size(),
         size_, part.size(), counts.size() == size_t(size_) ? counts[size_t(rank_)] : 0);
  if (!mpi_ || size_ == 1) {
    std::copy(part.begin(), part.end(), full);
    return;
  }
#ifdef GPT2CC_HAVE_MPI
  std::vector<int> sizes(counts.size()), offsets(counts.size());
  size_t total = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    offsets[r] = int(total);
    sizes[r] = int(counts[r]);
    total += counts[r];
    ENSURE(total <= kMpiChunk, "gather_parts: {} floats in all is more than MPI takes at once", total);
  }
  MPI_CALL(MPI_Gatherv(part.data(), int(part.size()), MPI_FLOAT, full, sizes.data(), offsets.data(), MPI_FLOAT, root,
                       MPI_COMM_WORLD));
#else
  (void)root;
#endif
}

std::vector<std::string> ProcessGroup::gather_strings(const std::string& mine, int root) {
  if (!mpi_ || size_ == 1) return {mine};
  std::vector<std::string> all;
#ifdef GPT2CC_HAVE_MPI
  // The lengths first, then the characters laid end to end (messages: far below MPI's int counts).
  ENSURE(mine.size() <= kMpiChunk, "gather_strings: a string of {} bytes is more than MPI takes at once", mine.size());
  const int length = int(mine.size());
  std::vector<int> lengths(rank_ == root ? size_t(size_) : 0), offsets(lengths.size());
  MPI_CALL(MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, root, MPI_COMM_WORLD));
  size_t total = 0;
  for (size_t r = 0; r < lengths.size(); ++r) {
    offsets[r] = int(total);
    total += size_t(lengths[r]);
  }
  ENSURE(total <= kMpiChunk, "gather_strings: {} bytes in all is more than MPI takes at once", total);
  std::string text(total, '\0');
  MPI_CALL(MPI_Gatherv(mine.data(), length, MPI_CHAR, text.data(), lengths.data(), offsets.data(), MPI_CHAR, root,
                       MPI_COMM_WORLD));
  for (size_t r = 0; r < lengths.size(); ++r) all.push_back(text.substr(size_t(offsets[r]), size_t(lengths[r])));
#else
  (void)root;
#endif
  return all;
}

void ProcessGroup::barrier() {
#ifdef GPT2CC_HAVE_MPI
  if (mpi_ && size_ > 1) MPI_CALL(MPI_Barrier(MPI_COMM_WORLD));
#endif
}

void ProcessGroup::abort(int code) {
#ifdef GPT2CC_HAVE_MPI
  if (mpi_ && size_ > 1) {
    // The launcher forwards each rank's output through pipes and stops reading them when the job
    // is torn down: the message this rank just printed was lost in about 1 run in 6 (MPICH 4.0)
    // without a moment for it to be read first.
    std::fflush(stdout);
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    MPI_Abort(MPI_COMM_WORLD, code);
  }
#else
  (void)code;
#endif
}

std::vector<std::string> merge_rank_failures(const std::string& program, const std::vector<std::string>& failures) {
  const int ranks = int(failures.size());
  std::vector<std::string> lines;
  std::vector<bool> told(failures.size(), false);
  for (int first = 0; first < ranks; ++first) {
    if (failures[size_t(first)].empty() || told[size_t(first)]) continue;
    // The ranks with this message, as runs: "0-2, 5".
    std::vector<int> had;
    for (int r = first; r < ranks; ++r) {
      if (failures[size_t(r)] != failures[size_t(first)]) continue;
      had.push_back(r);
      told[size_t(r)] = true;
    }
    std::string who;
    for (size_t i = 0; i < had.size();) {
      size_t j = i;
      while (j + 1 < had.size() && had[j + 1] == had[j] + 1) ++j;
      who += (who.empty() ? "" : ", ") + std::to_string(had[i]) +
             (j == i ? "" : (j == i + 1 ? ", " : "-") + std::to_string(had[j]));
      i = j + 1;
    }
    const std::string name = int(had.size()) == ranks ? format("{} (all {} ranks)", program, ranks)
                             : had.size() == 1        ? format("{} (rank {} of {})", program, who, ranks)
                                                      : format("{} (ranks {} of {})", program, who, ranks);
    const std::string& message = failures[size_t(first)];
    for (size_t begin = 0; begin <= message.size();) {
      const size_t end = std::min(message.find('\n', begin), message.size());
      lines.push_back(name + ": " + message.substr(begin, end - begin));
      begin = end + 1;
    }
  }
  return lines;
}

int cuda_device_of_rank(const ProcessGroup& group, int visible_devices) {
  if (visible_devices <= 1) return 0;  // none: the CUDA backend says so
  INPUT_CHECK(group.local_rank() < visible_devices,
              "rank {} is local rank {} of the {} on its machine, which shows it {} CUDA device(s): start at most {} "
              "ranks per machine, or give each rank its own GPU (CUDA_VISIBLE_DEVICES)",
              group.rank(), group.local_rank(), group.local_size(), visible_devices, visible_devices);
  return group.local_rank();
}

int cpu_threads_of_rank(const ProcessGroup& group, int requested) {
  if (requested > 0) return requested;
  // OMP_NUM_THREADS, where set, is each rank's (the usual MPI + OpenMP launch): 0 leaves it to the
  // backend, which reads and checks it as in one process.
  const char* omp = std::getenv("OMP_NUM_THREADS");
  if (omp != nullptr && *omp != '\0') return 0;
  return std::max(1, int(std::thread::hardware_concurrency()) / group.local_size());
}

// ---- collectives on host memory (the CPU backend) ----

#ifdef GPT2CC_HAVE_MPI
namespace {

// bf16 buffers (the bf16 backend's gradients and parameters) are summed in fp32, a chunk of
// kBf16Chunk elements at a time: widened into scratch, reduced there, each sum rounded once
// (NCCL's bf16 sum over two ranks rounds once too); a gather moves their bits.
constexpr size_t kBf16Chunk = size_t(1) << 22;  // 16 MiB of fp32 scratch

class MpiCollectives final : public DeviceCollectives {
 public:
  MpiCollectives(ProcessGroup& group, Backend& backend) : group_(group), backend_(backend) {}
  ProcessGroup& group() override { return group_; }

  void all_reduce_sum(TensorPtr buf, size_t n) override {
    ready(buf);
    if (buf.dtype == DType::bf16) {
      for (size_t done = 0; done < n; done += kBf16Chunk) {
        const size_t count = std::min(kBf16Chunk, n - done);
        float* wide = widened(buf, done, count);
        MPI_CALL(MPI_Allreduce(MPI_IN_PLACE, wide, int(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
        round_into(buf, done, wide, count);
      }
      return;
    }
    float* data = static_cast<float*>(buf.data);
    for (size_t done = 0; done < n; done += kMpiChunk) {
      const int count = int(std::min(kMpiChunk, n - done));
      MPI_CALL(MPI_Allreduce(MPI_IN_PLACE, data + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    }
  }
  void reduce_scatter_sum(TensorPtr buf, size_t block) override {
    ready(buf);
    ENSURE(block <= kMpiChunk, "reduce_scatter_sum: a block of {} floats is more than MPI takes at once", block);
    if (buf.dtype == DType::bf16) {  // block r summed onto rank r, a chunk at a time
      for (int owner = 0; owner < group_.size(); ++owner) {
        for (size_t done = 0; done < block; done += kBf16Chunk) {
          const size_t first = size_t(owner) * block + done, count = std::min(kBf16Chunk, block - done);
          const float* wide = widened(buf, first, count);
          // A receive buffer on every rank: MPICH's reduce of large counts wrote to the non-roots'
          // (a null one crashed it).
          sum_.resize(count);
          MPI_CALL(MPI_Reduce(wide, sum_.data(), int(count), MPI_FLOAT, MPI_SUM, owner, MPI_COMM_WORLD));
          if (owner == group_.rank()) round_into(buf, first, sum_.data(), count);
        }
      }
      return;
    }
    // MPI forbids overlapping send and receive buffers: the sum arrives in a scratch block first.
    float* data = static_cast<float*>(buf.data);
    scratch_.resize(block);
    MPI_CALL(MPI_Reduce_scatter_block(data, scratch_.data(), int(block), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD));
    std::copy(scratch_.begin(), scratch_.end(), data + size_t(group_.rank()) * block);
  }
  void all_gather(TensorPtr buf, size_t block) override {
    ready(buf);
    ENSURE(block <= kMpiChunk, "all_gather: a block of {} elements is more than MPI takes at once", block);
    const MPI_Datatype type = buf.dtype == DType::fp32 ? MPI_FLOAT : MPI_UINT16_T;
    MPI_CALL(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf.data, int(block), type, MPI_COMM_WORLD));
  }

 private:
  // The CPU backend's work is done when its calls return; its buffers are fp32 or bf16.
  void ready(TensorPtr buf) {
    ENSURE(buf.dtype == DType::fp32 || buf.dtype == DType::bf16, "MPI collectives: {} buffers on the CPU backend",
           dtype_name(buf.dtype));
    backend_.synchronize();
  }
  // bf16 buf[first, first + count) widened into scratch.
  float* widened(TensorPtr buf, size_t first, size_t count) {
    const uint16_t* bits = static_cast<const uint16_t*>(buf.data) + first;
    scratch_.resize(count);
    for (size_t i = 0; i < count; ++i) scratch_[i] = widen_bf16(bits[i]);
    return scratch_.data();
  }
  static void round_into(TensorPtr buf, size_t first, const float* sums, size_t count) {
    uint16_t* bits = static_cast<uint16_t*>(buf.data) + first;
    for (size_t i = 0; i < count; ++i) bits[i] = round_to_bf16(sums[i]);
  }

  ProcessGroup& group_;
  Backend& backend_;
  std::vector<float> scratch_, sum_;
};

}  // namespace
#endif

std::unique_ptr<DeviceCollectives> make_mpi_collectives(ProcessGroup& group, Backend& backend) {
  INPUT_CHECK(backend.kind() == DeviceKind::cpu,
              "MPI collectives work on host memory (the cpu backend); the cuda backend uses NCCL");
#ifdef GPT2CC_HAVE_MPI
  INPUT_CHECK(group.uses_mpi(), "MPI collectives need a process group joined through MPI");
  return std::make_unique<MpiCollectives>(group, backend);
#else
  fail_input("data-parallel training on the cpu backend needs MPI, and this build of gpt2cc has none: install MPI "
             "(Debian: libmpich-dev) and rebuild");
#endif
}

}  // namespace gpt2cc
