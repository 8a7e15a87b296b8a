// The CUDA backend factory's answer in a build without CUDA (kernels/backend.cu defines the
// real one when the CUDA backend is built).
#include "core/backend.hpp"
#include "core/check.hpp"

namespace gpt2cc {

#ifndef GPT2CC_HAVE_CUDA
std::unique_ptr<Backend> make_cuda_backend(int, DType) {
  fail_input(
      "--device cuda: this build of gpt2cc has no CUDA backend (nvcc was not found when it was configured); "
      "use --device cpu, or install the CUDA toolkit and rebuild with -DGPT2CC_CUDA=ON");
}
bool cuda_backend_built() { return false; }
#endif

}  // namespace gpt2cc
