// Catch2 main for the cuda tests (also for their runs on the emulated device, tests/emu/hostcuda).
// Without a CUDA device it says so and exits 77, which ctest reports as "skipped"
// (SKIP_RETURN_CODE), instead of failing or passing silently. On a GPU older than sm_80 (a T4,
// sm_75: the fp32 backend only) a run without test specs leaves out the cases tagged [bf16], which
// need bf16 tensor cores, and says so; the untagged cases there check that bf16 and flash attention
// are refused by name. A run given specs runs what they name.
#define CATCH_CONFIG_RUNNER
#include "common/catch.hpp"
#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::fprintf(stderr, "SKIPPED: no CUDA device present (%s); the cuda tests need a GPU\n",
                 err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 77;
  }
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess && prop.major < 8 && session.configData().testsOrTags.empty()) {
    std::fprintf(stderr, "NOTE: device 0 (%s) is sm_%d%d: the [bf16] cases need sm_80 or newer and are left out\n",
                 prop.name, prop.major, prop.minor);
    session.configData().testsOrTags.push_back("~[bf16]");
  }
  return session.run();
}
