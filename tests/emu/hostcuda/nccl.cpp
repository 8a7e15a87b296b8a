// The NCCL calls of kernels/collectives_nccl.cpp on emulated GPUs: the ranks of an mpiexec job are
// processes with one emulated device each (GPT2CC_EMU_DEVICES lets device i exist for local rank
// i), whose memory is host memory, so a collective is an MPI call on it after the stream's work
// (which the emulator has already run). Sums as NCCL defines them: fp32 by MPI, bf16 widened,
// added in rank order in fp32 and rounded once (NCCL rounds after each hop of its ring: results
// differ from these in the last bf16 bit at most per hop).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <vector>

struct ncclComm {
  int rank = 0;
  int size = 1;
};

namespace {

thread_local std::string last_error;

ncclResult_t fail(ncclResult_t code, const std::string& why) {
  last_error = why;
  return code;
}

size_t element_bytes(ncclDataType_t type) {
  switch (type) {
    case ncclFloat32:
      return 4;
    case ncclBfloat16:
      return 2;
    default:
      return 0;
  }
}

// recv[0, count) <- the sum over the ranks of their send[offset, offset + count), for fp32 and
// bf16. recv may lie inside send (NCCL's in-place forms): every rank's send is copied out first.
ncclResult_t sum_over_ranks(const void* send, size_t send_count, void* recv, size_t offset, size_t count,
                            ncclDataType_t type, ncclComm_t comm) {
  const size_t bytes = element_bytes(type);
  if (bytes == 0) return fail(ncclInvalidArgument, "emulated NCCL sums fp32 and bf16 only");
  // Every rank's whole buffer, then the sums of the wanted block in rank order.
  std::vector<unsigned char> all(send_count * bytes * size_t(comm->size));
  if (MPI_Allgather(send, int(send_count * bytes), MPI_BYTE, all.data(), int(send_count * bytes), MPI_BYTE,
                    MPI_COMM_WORLD) != MPI_SUCCESS)
    return fail(ncclSystemError, "MPI_Allgather failed");
  for (size_t i = 0; i < count; ++i) {
    float sum = 0.0f;
    for (int r = 0; r < comm->size; ++r) {
      const unsigned char* base = all.data() + (size_t(r) * send_count + offset + i) * bytes;
      if (type == ncclFloat32) {
        float x;
        std::memcpy(&x, base, 4);
        sum += x;
      } else {
        __nv_bfloat16 x;
        std::memcpy(&x, base, 2);
        sum += __bfloat162float(x);
      }
    }
    unsigned char* out = static_cast<unsigned char*>(recv) + i * bytes;
    if (type == ncclFloat32) {
      std::memcpy(out, &sum, 4);
    } else {
      const __nv_bfloat16 x = __float2bfloat16_rn(sum);
      std::memcpy(out, &x, 2);
    }
  }
  return ncclSuccess;
}

}  // namespace

extern "C" {

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  if (uniqueId == nullptr) return fail(ncclInvalidArgument, "null id");
  std::memset(uniqueId, 0, sizeof *uniqueId);
  std::memcpy(uniqueId->internal, "gpt2cc-emu", 10);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  int initialized = 0, size = 0, me = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return fail(ncclInvalidUsage, "emulated NCCL needs MPI initialised (the job's ranks)");
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (std::memcmp(commId.internal, "gpt2cc-emu", 10) != 0)
    return fail(ncclInvalidArgument, "the unique id did not come from ncclGetUniqueId (was it broadcast?)");
  if (nranks != size || rank != me)
    return fail(ncclInvalidArgument, "emulated NCCL: rank " + std::to_string(rank) + " of " + std::to_string(nranks) +
                                         " is not MPI's " + std::to_string(me) + " of " + std::to_string(size));
  *comm = new ncclComm{rank, nranks};
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclInvalidArgument:
      return "invalid argument";
    case ncclInvalidUsage:
      return "invalid usage";
    default:
      return "system error";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error.c_str(); }

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (op != ncclSum) return fail(ncclInvalidArgument, "emulated NCCL reduces with ncclSum only");
  cudaStreamSynchronize(stream);
  return sum_over_ranks(sendbuff, count, recvbuff, 0, count, datatype, comm);
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  if (op != ncclSum) return fail(ncclInvalidArgument, "emulated NCCL reduces with ncclSum only");
  cudaStreamSynchronize(stream);
  const size_t n = recvcount * size_t(comm->size);
  return sum_over_ranks(sendbuff, n, recvbuff, size_t(comm->rank) * recvcount, recvcount, datatype, comm);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  const size_t bytes = element_bytes(datatype) * sendcount;
  if (bytes == 0 && sendcount != 0) return fail(ncclInvalidArgument, "emulated NCCL gathers fp32 and bf16 only");
  cudaStreamSynchronize(stream);
  std::vector<unsigned char> mine(static_cast<const unsigned char*>(sendbuff),
                                  static_cast<const unsigned char*>(sendbuff) + bytes);
  if (MPI_Allgather(mine.data(), int(bytes), MPI_BYTE, recvbuff, int(bytes), MPI_BYTE, MPI_COMM_WORLD) != MPI_SUCCESS)
    return fail(ncclSystemError, "MPI_Allgather failed");
  (void)comm;
  return ncclSuccess;
}

}  // extern "C"
