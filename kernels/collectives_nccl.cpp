// Collectives on a CUDA backend's memory over NCCL (core/distributed.hpp): one communicator per
// process group, bootstrapped through MPI (rank 0's ncclUniqueId, broadcast), every collective
// enqueued on the backend's stream after its ops. Gradients are summed, and parameters gathered,
// in the compute dtype (bf16 or fp32), as NCCL moves them.
#include <cuda_runtime.h>
#include <nccl.h>

#include "core/check.hpp"
#include "core/distributed.hpp"

namespace gpt2cc {

namespace {

void nccl_check(ncclResult_t result, const char* what) {
  if (result == ncclSuccess) return;
  throw Error(format("NCCL {} failed: {} ({})", what, ncclGetErrorString(result), ncclGetLastError(nullptr)));
}
#define NCCL_CALL(call) nccl_check((call), #call)

ncclDataType_t nccl_type(DType dtype) { return dtype == DType::bf16 ? ncclBfloat16 : ncclFloat32; }

class NcclCollectives final : public DeviceCollectives {
 public:
  NcclCollectives(ProcessGroup& group, Backend& backend)
      : group_(group), stream_(static_cast<cudaStream_t>(backend.stream_handle())) {
    ENSURE(stream_ != nullptr, "NCCL collectives: the cuda backend has no stream");
    ncclUniqueId id{};
    if (group.is_root()) NCCL_CALL(ncclGetUniqueId(&id));
    group.broadcast(&id, sizeof id);
    // On the device the backend made current; NCCL keeps it.
    NCCL_CALL(ncclCommInitRank(&comm_, group.size(), id, group.rank()));
  }
  ~NcclCollectives() override {
    cudaStreamSynchronize(stream_);
    ncclCommDestroy(comm_);
  }
  ProcessGroup& group() override { return group_; }

  void all_reduce_sum(TensorPtr buf, size_t n) override {
    NCCL_CALL(ncclAllReduce(buf.data, buf.data, n, nccl_type(buf.dtype), ncclSum, comm_, stream_));
  }
  // In place as NCCL defines it: the receive block is the rank's own block of the send buffer.
  void reduce_scatter_sum(TensorPtr buf, size_t block) override {
    void* own = (buf + size_t(group_.rank()) * block).data;
    NCCL_CALL(ncclReduceScatter(buf.data, own, block, nccl_type(buf.dtype), ncclSum, comm_, stream_));
  }
  void all_gather(TensorPtr buf, size_t block) override {
    const void* own = (buf + size_t(group_.rank()) * block).data;
    NCCL_CALL(ncclAllGather(own, buf.data, block, nccl_type(buf.dtype), comm_, stream_));
  }

 private:
  ProcessGroup& group_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceCollectives> make_nccl_collectives(ProcessGroup& group, Backend& backend) {
  INPUT_CHECK(backend.kind() == DeviceKind::cuda, "NCCL collectives need the cuda backend");
  return std::make_unique<NcclCollectives>(group, backend);
}

}  // namespace gpt2cc
