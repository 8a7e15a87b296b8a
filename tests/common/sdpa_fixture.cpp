#include "common/sdpa_fixture.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/array_fixture.hpp"
#include "common/test_common.hpp"

namespace gpt2cc::test {

namespace {

std::vector<float> widen_bf16(const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) {
    const uint32_t word = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&out[i], &word, sizeof(float));
  }
  return out;
}

}  // namespace

std::vector<SdpaCase> load_sdpa_cases() {
  const ArrayFixture f = load_array_fixture("sdpa", "python3 tests/make_sdpa_fixture.py");
  std::vector<SdpaCase> cases;
  for (const nlohmann::json& c : f.meta["cases"]) {
    SdpaCase s;
    s.name = c["name"].get<std::string>();
    s.B = c["B"];
    s.T = c["T"];
    s.NH = c["NH"];
    s.HS = c["HS"];
    s.range = c["range"];
    const nlohmann::json& e = c["torch_bf16_rel_l2"];
    s.torch_bf16_out = e["out"];
    s.torch_bf16_dq = e["dq"];
    s.torch_bf16_dk = e["dk"];
    s.torch_bf16_dv = e["dv"];
    const size_t BTC = static_cast<size_t>(s.B) * s.T * s.C();
    s.qkv = widen_bf16(f.array<uint16_t>(s.name + ".qkv", 3 * BTC));
    s.dout = widen_bf16(f.array<uint16_t>(s.name + ".dout", BTC));
    s.out = f.array<float>(s.name + ".out", BTC);
    s.dqkv = f.array<float>(s.name + ".dqkv", 3 * BTC);
    cases.push_back(std::move(s));
  }
  REQUIRE(!cases.empty());
  return cases;
}

void check_as_accurate_as_torch_bf16(const std::vector<float>& out, const std::vector<float>& dqkv, const SdpaCase& c,
                                     const std::string& what) {
  const int BT = c.B * c.T, C = c.C();
  REQUIRE(out.size() >= c.out.size());
  REQUIRE(dqkv.size() >= c.dqkv.size());
  struct Part {
    const char* name;
    double error, torch;
  };
  const Part parts[4] = {
      {"out", rel_error(out.data(), c.out.data(), c.out.size()), c.torch_bf16_out},
      {"dq", rel_error(qkv_part(dqkv, BT, C, 0), qkv_part(c.dqkv, BT, C, 0)), c.torch_bf16_dq},
      {"dk", rel_error(qkv_part(dqkv, BT, C, 1), qkv_part(c.dqkv, BT, C, 1)), c.torch_bf16_dk},
      {"dv", rel_error(qkv_part(dqkv, BT, C, 2), qkv_part(c.dqkv, BT, C, 2)), c.torch_bf16_dv}};
  for (const Part& p : parts) {
    INFO(what << " on " << c.name << ", " << p.name << ": relative L2 error " << p.error
              << " against SDPA in float64; PyTorch's bf16 SDPA: " << p.torch << " (allowed: " << kTorchBf16ErrorFactor
              << "x)");
    CHECK(p.error <= kTorchBf16ErrorFactor * p.torch);
  }
}

}  // namespace gpt2cc::test
