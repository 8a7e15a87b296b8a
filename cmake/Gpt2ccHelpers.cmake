# Small helpers so every target gets the same flags without globals.

# find_package that fails configure with the Debian package to install. The package's version
# (<name>_VERSION) is passed up to the caller (tests/CMakeLists.txt reads Catch2's).
function(gpt2cc_require_package name)
  cmake_parse_arguments(ARG "" "DEBIAN" "" ${ARGN})
  find_package(${name} QUIET)
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR "${name} not found: install the Debian package '${ARG_DEBIAN}' (scripts/test.sh installs every dependency)")
  endif()
  set(${name}_VERSION "${${name}_VERSION}" PARENT_SCOPE)
endfunction()

# Warnings, optimisation and sanitizers for one target.
function(gpt2cc_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wno-unused-parameter>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CONFIG:Release>>:-O3 -march=x86-64-v3 -mtune=native>)
  if(GPT2CC_WARNINGS_AS_ERRORS)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
  if(GPT2CC_SANITIZE)
    string(REPLACE ";" "," san "${GPT2CC_SANITIZE}")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=${san} -fno-omit-frame-pointer>)
    target_link_options(${target} PRIVATE -fsanitize=${san})
  endif()
endfunction()

# Flags for CUDA targets: line info for profilers, fast compile, no tf32 assumptions.
function(gpt2cc_cuda_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -lineinfo -Xcompiler=-Wall>)
  set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
endfunction()

# A Catch2 test executable registered with ctest. LABELS cpu|cuda|slow...; a test exiting 77 is
# reported by ctest as skipped (the cuda tests do so when no GPU is present). CUSTOM_MAIN: the
# sources bring their own main (Catch2 CATCH_CONFIG_RUNNER) instead of the shared one.
function(gpt2cc_add_test name)
  cmake_parse_arguments(ARG "CUSTOM_MAIN" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  if(ARG_CUSTOM_MAIN)
    target_link_libraries(${name} PRIVATE gpt2cc_test_support ${ARG_LIBS})
  else()
    target_link_libraries(${name} PRIVATE gpt2cc_test_main ${ARG_LIBS})
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  gpt2cc_target_defaults(${name})
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    LABELS "${ARG_LABELS}" SKIP_RETURN_CODE 77 TIMEOUT ${ARG_TIMEOUT}
    ENVIRONMENT "GPT2CC_SOURCE_DIR=${PROJECT_SOURCE_DIR};GPT2CC_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
