#include "common/array_fixture.hpp"

#include <fstream>
#include <iterator>

#include "common/test_common.hpp"

namespace gpt2cc::test {

ArrayFixture load_array_fixture(const std::string& stem, const std::string& regenerate) {
  ArrayFixture f;
  f.stem = stem;
  f.regenerate = regenerate;
  const std::string json_path = fixture_path(stem + ".json");
  const std::string bin_path = fixture_path(stem + ".bin");
  INFO("fixture " << json_path << " with " << bin_path << " (regenerate with: " << regenerate << ")");
  std::ifstream js(json_path);
  REQUIRE(js.good());
  f.meta = nlohmann::json::parse(js, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(f.meta.is_discarded());
  REQUIRE(f.meta.contains("arrays"));
  std::ifstream bin(bin_path, std::ios::binary);
  REQUIRE(bin.good());
  f.blob.assign(std::istreambuf_iterator<char>(bin), std::istreambuf_iterator<char>());
  return f;
}

}  // namespace gpt2cc::test
