// The --gemm flag of the CPU benchmarks: which register tile the CPU's products use
// (cpu/gemm.hpp), so that one can be timed against the other in the same run.
#pragma once

#include <string>

#include "core/check.hpp"
#include "cpu/amx.hpp"
#include "cpu/gemm.hpp"

namespace gpt2cc::bench {

inline constexpr const char* kGemmFlagHelp =
    "the CPU products' register tile: auto (AVX-512 where the CPU has it), avx2 or avx512";

inline const char* gemm_isa_name(cpu::GemmIsa isa) { return isa == cpu::GemmIsa::avx512 ? "avx512" : "avx2"; }

// What the bf16 backend's products run on: "amx+avx512-bf16" (AMX tiles for the forward from 33
// rows, VDPBF16PS for the rest), "avx512-bf16", or "widened" (fp32 products on widened operands).
inline const char* bf16_products_name() {
  if (cpu::amx_bf16_enabled()) return cpu::gemm_bf16_enabled() ? "amx+avx512-bf16" : "amx+widened";
  return cpu::gemm_bf16_enabled() ? "avx512-bf16" : "widened";
}

// Applies --gemm's value; exit 2 (InputError) for another value, or avx512 on a CPU without it.
inline void apply_gemm_flag(const std::string& value) {
  INPUT_CHECK(value == "auto" || value == "avx2" || value == "avx512", "--gemm must be auto, avx2 or avx512, got '{}'",
              value);
  if (value == "auto") return;
  INPUT_CHECK(value == "avx2" || cpu::cpu_has_avx512(), "--gemm avx512: this CPU has no AVX-512");
  cpu::set_gemm_isa(value == "avx2" ? cpu::GemmIsa::avx2 : cpu::GemmIsa::avx512);
}

}  // namespace gpt2cc::bench
