// The parameter layout: tensor order, shapes, offsets, weight-decay flags and totals, checked
// against hand-computed GPT-2 124M figures (llm.c reports the same 124,475,904 with Vp = 50304),
// and the errors for impossible configurations.
#include <omp.h>

#include <algorithm>
#include "common/catch.hpp"
#include <cstdint>
#include <vector>

#include "core/check.hpp"
#include "core/model.hpp"
#include "core/params.hpp"

using namespace gpt2cc;

TEST_CASE("GPT-2 124M layout: order, shapes, offsets, total", "[params]") {
  const ModelConfig c = model_preset("gpt2");
  const ParameterLayout layout(c);
  const size_t L = 12, C = 768, Vp = 50304, maxT = 1024;
  REQUIRE(layout.tensors().size() == size_t(kNumParamTensors));
  const char* names[] = {"wte",     "wpe",      "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb",
                         "ln2w",    "ln2b",     "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw",     "lnfb"};
  const std::vector<std::vector<size_t>> shapes = {
      {Vp, C},    {maxT, C}, {L, C},        {L, C},     {L, 3 * C, C}, {L, 3 * C}, {L, C, C}, {L, C},
      {L, C},     {L, C},    {L, 4 * C, C}, {L, 4 * C}, {L, C, 4 * C}, {L, C},     {C},       {C}};
  size_t offset = 0;
  for (int i = 0; i < kNumParamTensors; ++i) {
    const ParamTensor& t = layout[static_cast<Param>(i)];
    INFO("tensor " << i << " " << t.name);
    CHECK(t.name == names[i]);
    CHECK(t.shape == shapes[i]);
    CHECK(t.offset == offset);
    size_t numel = 1;
    for (size_t d : shapes[i]) numel *= d;
    CHECK(t.numel == numel);
    offset += numel;
  }
  CHECK(layout.total() == offset);
  CHECK(layout.total() == 124475904u);
  CHECK(layout.total() == num_parameters(c));
  // Hand-computed offsets of a few tensors.
  CHECK(layout[Param::wpe].offset == Vp * C);                        // 38,633,472
  CHECK(layout[Param::ln1w].offset == Vp * C + maxT * C);             // 39,419,904
  CHECK(layout[Param::lnfb].offset == layout.total() - C);
}

TEST_CASE("weight decay only on the weight matrices wte qkvw attprojw fcw fcprojw (not wpe)", "[params]") {
  const ParameterLayout layout(model_preset("d2"));
  for (const ParamTensor& t : layout.tensors()) {
    const bool matrix = t.name == "wte" || t.name == "qkvw" || t.name == "attprojw" || t.name == "fcw" ||
                        t.name == "fcprojw";
    INFO(t.name);
    CHECK(t.weight_decay == matrix);
  }
}

TEST_CASE("impossible configurations are rejected naming the field", "[params]") {
  ModelConfig c = model_preset("d2");
  c.num_heads = 5;  // 128 % 5 != 0
  CHECK_THROWS_WITH(ParameterLayout(c), Catch::Contains("num_heads") && Catch::Contains("128"));
  c = model_preset("d2");
  c.num_layers = 0;
  CHECK_THROWS_AS(ParameterLayout(c), InputError);

  auto backend = make_cpu_backend(1);
  c = model_preset("d2");
  c.max_seq_len = 16;
  CHECK_THROWS_WITH(GPT2(c, *backend, 1, 17), Catch::Contains("max_seq_len = 16") && Catch::Contains("17"));
  CHECK_THROWS_AS(GPT2(c, *backend, 0, 8), InputError);
}

TEST_CASE("cpu backend: zeroed 64-byte aligned allocations, copies, description", "[params][backend]") {
  auto backend = make_cpu_backend(1);
  CHECK(backend->kind() == DeviceKind::cpu);
  CHECK(backend->describe() == "cpu fp32 (1 thread)");
  CHECK(backend->dtype() == DType::fp32);
  for (size_t count : {size_t(1), size_t(13), size_t(1000)}) {
    DeviceArray<float> a(*backend, count);
    REQUIRE(a.data() != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(a.data()) % 64 == 0);
    bool all_zero = true;
    for (size_t i = 0; i < count; ++i) all_zero = all_zero && a.data()[i] == 0.0f;
    CHECK(all_zero);
    std::vector<float> host(count), back(count);
    for (size_t i = 0; i < count; ++i) host[i] = float(i) + 0.5f;
    backend->upload(a.data(), host.data(), a.bytes());
    DeviceArray<float> b(*backend, count);
    backend->copy(b.data(), a.data(), a.bytes());
    backend->download(back.data(), b.data(), b.bytes());
    CHECK(back == host);
    backend->zero(b.data(), b.bytes());
    backend->download(back.data(), b.data(), b.bytes());
    CHECK(back == std::vector<float>(count, 0.0f));
  }
  CHECK_THROWS_AS(make_cpu_backend(-1), InputError);
  CHECK_THROWS_AS(make_cpu_backend(kMaxThreads + 1), InputError);
  CHECK(backend->device_name().empty());  // no GPU peak to look up
  // More than the machine has is refused before a byte is touched (the zero fill would wake the
  // OOM killer: exit 137, no message), saying how much there is.
  CHECK_THROWS_AS(backend->allocate(size_t(1) << 50), OutOfMemoryError);
  CHECK_THROWS_WITH(backend->allocate(size_t(1) << 50),
                    Catch::Contains("out of memory allocating 1125899906842624 bytes") &&
                        Catch::Contains("MiB of memory are available"));
}

// zero() splits a buffer of 1 MiB or more among the threads in whole cache lines: whatever the
// thread count, the size and the start's alignment, exactly the bytes asked become 0.
TEST_CASE("cpu backend: zero clears exactly its bytes on any thread count", "[params][backend]") {
  const int threads_before = omp_get_max_threads();
  constexpr size_t kMiB = size_t{1} << 20, kGuard = 4096;
  for (int threads : {1, 2, 3}) {
    auto backend = make_cpu_backend(threads);
    for (size_t bytes : {kMiB - 1, kMiB, kMiB + 1, 3 * kMiB + 13, 5 * kMiB + 64})
      for (size_t offset : {size_t(0), size_t(3), size_t(64)}) {
        INFO(threads << " threads, " << bytes << " bytes from byte " << offset);
        std::vector<unsigned char> host(bytes + offset + kGuard, 0xAB);
        backend->zero(host.data() + offset, bytes);
        const auto first_nonzero = std::find_if(host.begin() + offset, host.begin() + offset + bytes,
                                                [](unsigned char b) { return b != 0; });
        CHECK(first_nonzero - host.begin() == std::ptrdiff_t(offset + bytes));
        CHECK(std::all_of(host.begin(), host.begin() + offset, [](unsigned char b) { return b == 0xAB; }));
        CHECK(std::all_of(host.begin() + offset + bytes, host.end(), [](unsigned char b) { return b == 0xAB; }));
      }
  }
  omp_set_num_threads(threads_before);
}
