// Residual connection (cpu/residual.hpp): out = inp1 + inp2 over N elements (B*T*C: the residual
// stream and a block's output). Backward: dinp1 += dout and dinp2 += dout, both ACCUMULATED, as
// the one residual-stream gradient every block adds into.
#include "cpu/residual.hpp"

namespace gpt2cc::cpu {

// out = inp1 + inp2
void residual_forward(float* out, const float* inp1, const float* inp2, size_t N) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) out[i] = inp1[i] + inp2[i];
}

// d(out)/d(inp1) = d(out)/d(inp2) = 1, so dout flows unchanged into both (accumulated: +=).
void residual_backward(float* dinp1, float* dinp2, const float* dout, size_t N) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < N; ++i) {
    dinp1[i] += dout[i];
    dinp2[i] += dout[i];
  }
}

}  // namespace gpt2cc::cpu
