// Data-parallel training over several processes (DESIGN.md "Scale beyond one GPU"): one process
// (rank) per GPU, or per CPU socket, launched by MPI (`mpiexec -n 4 train ...`), every rank holding
// the whole model. A step's micro-batches are dealt out over the ranks; the gradients are summed
// over the ranks (NCCL on CUDA, MPI on the CPU backend), then
//   ZeRO stage 0: every rank runs AdamW over all parameters (all-reduce of the gradients);
//   ZeRO stage 1: rank r owns one contiguous 1/ranks of the parameters and holds only that part
//                 of the AdamW moments, and in bf16 of the fp32 master weights (reduce-scatter of
//                 the gradients, AdamW on its part, then an all-gather of the parameters in the
//                 compute dtype) (Rajbhandari et al. 2020).
// Both move the same bytes per step; stage 1 keeps 2N/ranks moment floats per rank instead of
// 2N, and in bf16 N/ranks master floats instead of N.
//
// ProcessGroup: who the ranks are, and small collectives on host values (loss sums, the stop
// flag, a checkpoint's sharded optimizer state and master weights). DeviceCollectives:
// collectives on buffers in a backend's memory. Every rank must call every collective, in the
// same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/backend.hpp"

namespace gpt2cc {

// What the launcher says about this process: mpiexec / mpirun / srun set rank and size variables
// (MPICH: PMI_RANK, PMI_SIZE; Open MPI: OMPI_COMM_WORLD_RANK, ...; srun: SLURM_PROCID, ...).
struct LaunchInfo {
  int rank = 0;
  int size = 1;
  std::string launcher;  // the variable that told, e.g. "PMI_SIZE"; empty: not launched by MPI
};
LaunchInfo detect_launch();

class ProcessGroup {
 public:
  // Joins the job: MPI_Init when the launcher started several ranks, a single process otherwise.
  // InputError when the launcher started several ranks and this build has no MPI (each would
  // train alone, all into one run directory), or another MPI's launcher did (each rank would
  // come up as a job of one).
  static std::unique_ptr<ProcessGroup> join(int* argc, char*** argv);
  // A single process without MPI.
  static std::unique_ptr<ProcessGroup> single();
  ~ProcessGroup();  // MPI_Finalize
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }  // ranks on this machine
  bool is_root() const { return rank_ == 0; }
  bool uses_mpi() const { return mpi_; }

  // Host collectives (no-ops on a single process).
  void all_reduce_sum(std::span<double> values);
  bool any(bool flag);  // true when any rank passes true
  void broadcast(void* data, size_t bytes, int root = 0);
  // Rank r's `part` lands at full[r * part.size()] on the root (full: size() * part.size()
  // floats there; ignored elsewhere).
  void gather(float* full, std::span<const float> part, int root = 0);
  // The ranks' parts laid end to end in rank order on the root: rank r's `part` (counts[r] floats,
  // 0 allowed) lands at full[counts[0] + ... + counts[r - 1]]. Every rank passes the same counts;
  // full holds their sum on the root and is ignored elsewhere.
  void gather_parts(float* full, std::span<const float> part, std::span<const size_t> counts, int root = 0);
  // Rank r's `mine` is element r of the root's result; the other ranks get an empty vector.
  std::vector<std::string> gather_strings(const std::string& mine, int root = 0);
  void barrier();
  // Ends every rank of the job with `code` (after an error on this one: the others would wait
  // forever in their next collective). Returns on a single process.
  void abort(int code);

 private:
  ProcessGroup() = default;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool mpi_ = false;
};

// The lines the root prints for a step that failed on some ranks (core/cli.hpp's
// agree_on_failure): failures[r] is rank r's message, lines separated by '\n', or "" where that
// rank succeeded. Each distinct message once, in the order of the first rank that had it, every
// line after a name of its ranks:
//   train (all 4 ranks): no shards found at data/x
//   train (rank 2 of 4): cannot open data/x/a.bin: Permission denied
//   train (ranks 0-2, 5 of 8): ...
std::vector<std::string> merge_rank_failures(const std::string& program, const std::vector<std::string>& failures);

// Where a rank runs. A GPU: local rank i takes GPU i, and a rank that sees one GPU (a scheduler
// gave each rank its own through CUDA_VISIBLE_DEVICES) takes that one; InputError for more ranks
// on a machine than it shows GPUs. CPU threads: `requested`, or for 0 OMP_NUM_THREADS where it is
// set (returned as 0: the backend reads it), else the machine's cores shared among its ranks.
int cuda_device_of_rank(const ProcessGroup& group, int visible_devices);
int cpu_threads_of_rank(const ProcessGroup& group, int requested);

// Collectives on a backend's memory, among the ranks of a ProcessGroup; in place, ordered after
// the backend's earlier work (on CUDA: enqueued on the backend's stream).
class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual ProcessGroup& group() = 0;
  // buf[0, n) <- the sum over the ranks of their buf[0, n).
  virtual void all_reduce_sum(TensorPtr buf, size_t n) = 0;
  // buf holds size() blocks of `block` elements; rank r's block r becomes the sum over the ranks
  // of their block r. The other blocks are left unspecified.
  virtual void reduce_scatter_sum(TensorPtr buf, size_t block) = 0;
  // buf holds size() blocks of `block` elements; every rank's block r becomes rank r's block r.
  virtual void all_gather(TensorPtr buf, size_t block) = 0;
};

// The collectives for `backend`'s memory: MPI on the CPU backend's host memory, NCCL on CUDA.
// InputError when this build has no way to do it (no MPI; CUDA without NCCL). Defined with the
// backend selection (core/backend_select.cpp).
std::unique_ptr<DeviceCollectives> make_device_collectives(ProcessGroup& group, Backend& backend);
// The two implementations: host memory over MPI (core/distributed.cpp); a CUDA backend's memory
// over NCCL (kernels/collectives_nccl.cpp, when built with NCCL).
std::unique_ptr<DeviceCollectives> make_mpi_collectives(ProcessGroup& group, Backend& backend);
std::unique_ptr<DeviceCollectives> make_nccl_collectives(ProcessGroup& group, Backend& backend);

}  // namespace gpt2cc
