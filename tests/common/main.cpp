// The one Catch2 main every test executable links (compiled once: Catch2 v2's main is slow to
// build). Written out, not CATCH_CONFIG_MAIN's, which Catch2 v3 no longer has.
#define CATCH_CONFIG_RUNNER
#include "common/catch.hpp"

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
