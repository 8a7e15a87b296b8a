// The backend-dependent factories, in the library that links every backend built: the CUDA
// backend's "not built" answer in a build without CUDA (kernels/backend.cu defines the real one),
// NCCL's in a build without it (kernels/collectives_nccl.cpp), and the choice of collectives for
// a backend's memory (core/distributed.hpp).
#include "core/backend.hpp"
#include "core/check.hpp"
#include "core/distributed.hpp"

namespace gpt2cc {

#ifndef GPT2CC_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int, DType) {
#ifdef GPT2CC_CUDA_TURNED_OFF
  fail_input(
      "--device cuda: this build of gpt2cc has no CUDA backend (it was configured with -DGPT2CC_CUDA=OFF); "
      "use --device cpu, or rebuild with -DGPT2CC_CUDA=AUTO or ON");
#else
  fail_input(
      "--device cuda: this build of gpt2cc has no CUDA backend (nvcc was not found when it was configured); "
      "use --device cpu, or install the CUDA toolkit and rebuild with -DGPT2CC_CUDA=ON");
#endif
}
bool cuda_backend_built() { return false; }
int cuda_device_count() { return 0; }
#endif

#ifndef GPT2CC_HAVE_NCCL
std::unique_ptr<DeviceCollectives> make_nccl_collectives(ProcessGroup&, Backend&) {
  fail_input(
      "data-parallel training on --device cuda needs NCCL, and this build of gpt2cc has none (nccl.h and libnccl "
      "were not found when it was configured): install NCCL (Debian/Ubuntu: libnccl-dev) and rebuild");
}
#endif

std::unique_ptr<DeviceCollectives> make_device_collectives(ProcessGroup& group, Backend& backend) {
  if (backend.kind() == DeviceKind::cuda) return make_nccl_collectives(group, backend);
  return make_mpi_collectives(group, backend);
}

}  // namespace gpt2cc
