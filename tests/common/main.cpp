// The one Catch2 main every test executable links (compiled once: Catch2 v2's main is slow to build).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
