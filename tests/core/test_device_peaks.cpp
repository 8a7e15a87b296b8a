// The GPU peak table behind MFU (core/device_peaks.hpp): the built-in copy is the committed
// benchmarks/gpu/peaks.json, real device names find their entries (the first match wins, so the
// H100 NVL and H200 NVL are not taken for the SXM parts), unreadable tables are input errors, and
// the training FLOPs per token are 6N + 6*L*C*T with N without the padded vocabulary rows.
#include "common/catch.hpp"
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/test_common.hpp"
#include "core/check.hpp"
#include "core/config.hpp"
#include "core/device_peaks.hpp"

using namespace gpt2cc;

TEST_CASE("the built-in peak table is benchmarks/gpu/peaks.json as committed", "[peaks]") {
  std::ifstream file(test::source_dir() + "/benchmarks/gpu/peaks.json");
  REQUIRE(file.good());
  CHECK(nlohmann::json::parse(built_in_peak_table()) == nlohmann::json::parse(file));
}

TEST_CASE("device names as the driver gives them find their datasheet peaks", "[peaks]") {
  struct Expected {
    const char* device;  // cudaDeviceProp::name
    const char* entry;
    std::optional<double> bf16, fp32, memory;
  };
  const Expected cases[] = {
      {"NVIDIA H100 80GB HBM3", "H100 SXM5", 989.4, 67, 3350},
      {"NVIDIA H100 PCIe", "H100 PCIe", 756.5, 51, 2000},
      {"NVIDIA H200", "H200 SXM", 989.4, 67, 4800},
      {"NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", 312, 19.5, 2039},
      {"NVIDIA L4", "L4", 121, 30.3, 300},
      {"NVIDIA GeForce RTX 4090", "GeForce RTX 4090", 165.2, 82.6, 1008},
      // Listed without figures, so that they do not match the SXM parts' entries.
      {"NVIDIA H100 NVL", "H100 NVL", std::nullopt, std::nullopt, std::nullopt},
      {"NVIDIA H200 NVL", "H200 NVL", std::nullopt, std::nullopt, std::nullopt},
  };
  for (const Expected& e : cases) {
    INFO(e.device);
    const DevicePeaks p = lookup_device_peaks(e.device);
    CHECK(p.matched);
    CHECK(p.name == e.entry);
    CHECK(!p.source.empty());
    CHECK(p.bf16_dense_tflops == e.bf16);
    CHECK(p.fp32_tflops == e.fp32);
    CHECK(p.hbm_gbps == e.memory);
    CHECK(matmul_peak_tflops(p, DType::bf16) == e.bf16);
    CHECK(matmul_peak_tflops(p, DType::fp32) == e.fp32);
  }
  // Neighbours with other rates and no entry: a Grace Hopper (another memory), an RTX 4090 D
  // and the laptop part (fewer SMs) must not take the H200's or the RTX 4090's figures.
  for (const char* unknown : {"Tesla T4", "NVIDIA GeForce GTX 1080", "gpt2cc CPU emulator", "", "NVIDIA GH200 480GB",
                              "NVIDIA GH200 144G HBM3e", "NVIDIA GeForce RTX 4090 D",
                              "NVIDIA GeForce RTX 4090 Laptop GPU"}) {
    INFO(unknown);
    const DevicePeaks p = lookup_device_peaks(unknown);
    CHECK_FALSE(p.matched);
    CHECK_FALSE(matmul_peak_tflops(p, DType::bf16).has_value());
    CHECK_FALSE(matmul_peak_tflops(p, DType::fp32).has_value());
  }
  CHECK(std::string(matmul_peak_kind(DType::bf16)) == "bf16 dense tensor-core");
  CHECK(std::string(matmul_peak_kind(DType::fp32)) == "fp32 non-tensor");
}

TEST_CASE("a peak table file is read, and a missing or malformed one is an input error naming it", "[peaks]") {
  const std::string dir = test::temp_dir("device_peaks");
  const auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string own = write("own.json", R"({"gpus": [{"name": "Lab GPU", "pattern": "Lab", "source": "s",
      "bf16_dense_tflops": 100, "fp32_tflops": null, "hbm_gbps": 1000}]})");
  const DevicePeaks p = lookup_device_peaks("Lab GPU 7", own);
  CHECK(p.matched);
  CHECK(p.bf16_dense_tflops == 100.0);
  CHECK_FALSE(p.fp32_tflops.has_value());
  CHECK_FALSE(lookup_device_peaks("NVIDIA H100 80GB HBM3", own).matched);  // only that table

  CHECK_THROWS_MATCHES(lookup_device_peaks("x", dir + "/missing.json"), InputError,
                       Catch::Message("cannot read the GPU peak table " + dir + "/missing.json"));
  const std::string broken = write("broken.json", R"({"gpus": [)");
  CHECK_THROWS_WITH(lookup_device_peaks("x", broken), Catch::StartsWith("malformed GPU peak table " + broken));
  const std::string no_pattern = write("no_pattern.json", R"({"gpus": [{"name": "A"}]})");
  CHECK_THROWS_WITH(lookup_device_peaks("x", no_pattern), Catch::StartsWith("malformed GPU peak table " + no_pattern));
  const std::string bad_regex = write("bad_regex.json", R"({"gpus": [{"name": "A", "pattern": "H100 (SXM"}]})");
  CHECK_THROWS_WITH(lookup_device_peaks("x", bad_regex),
                    Catch::StartsWith("malformed pattern in GPU peak table " + bad_regex));
}

TEST_CASE("training FLOPs per token are 6N + 6*L*C*T, N without the padded vocabulary rows", "[peaks]") {
  const ModelConfig gpt2 = model_preset("gpt2");
  CHECK(num_trained_parameters(gpt2) == 124439808u);
  // 6 * 124,439,808 + 6 * 12 * 768 * 1024
  CHECK(training_flops_per_token(gpt2, 1024) == 803261952.0);
  CHECK(training_flops_per_token(gpt2, 64) == 6.0 * 124439808 + 6.0 * 12 * 768 * 64);
  // L=2, C=16, V=100 (Vp 128), maxT=32: 12*C^2 + 13*C = 3280 per layer; 128*16 + 32*16 + 2*3280
  // + 2*16 = 9152 parameters, 8704 without the 28 padded rows.
  ModelConfig tiny;
  tiny.num_layers = 2;
  tiny.channels = 16;
  tiny.num_heads = 2;
  tiny.vocab_size = 100;
  tiny.padded_vocab_size = 128;
  tiny.max_seq_len = 32;
  CHECK(num_parameters(tiny) == 9152u);
  CHECK(num_trained_parameters(tiny) == 8704u);
  CHECK(training_flops_per_token(tiny, 32) == 6.0 * 8704 + 6.0 * 2 * 16 * 32);
}
