// Catch2 for every test, version 2 (Debian 12's catch2 2.13) or 3 (Debian 13's catch2 3.7,
// Ubuntu 24.04's 3.4): CMake passes the major version it found as GPT2CC_CATCH2_MAJOR
// (tests/CMakeLists.txt, target gpt2cc_catch2). The tests are written with version 2's names;
// under version 3 this header gives them those names again, each as what version 3 calls it:
//   Catch::Contains (a substring)  -> Catch::Matchers::ContainsSubstring
//   Catch::StartsWith, EndsWith    -> Catch::Matchers::StartsWith, EndsWith
//   Catch::Message (an exception's what()) -> Catch::Matchers::Message
//   Catch::TestEventListenerBase   -> Catch::EventListenerBase
//   Approx (global)                -> Catch::Approx
// One difference stays visible where it is used: a listener's assertionEnded returns bool in
// version 2 and void in version 3 (tests/train/test_data_parallel.cpp).
#pragma once

#ifndef GPT2CC_CATCH2_MAJOR
#error "GPT2CC_CATCH2_MAJOR is not defined: link the test to gpt2cc_catch2 (tests/CMakeLists.txt)"
#endif

#if GPT2CC_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>

#include <string>

namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text,
                                                CaseSensitive case_sensitivity = CaseSensitive::Yes) {
  return Matchers::ContainsSubstring(text, case_sensitivity);
}
using Matchers::EndsWith;
using Matchers::Message;
using Matchers::StartsWith;
using TestEventListenerBase = EventListenerBase;
}  // namespace Catch
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif
