// Catch2 main for the cuda tests: without a CUDA device it says so and exits 77, which ctest
// reports as "skipped" (SKIP_RETURN_CODE), instead of failing or passing silently.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
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
  return Catch::Session().run(argc, argv);
}
