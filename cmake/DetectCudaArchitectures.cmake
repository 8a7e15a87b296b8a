# The default of GPT2CC_CUDA_ARCHITECTURES: the architectures of this machine's GPUs.
#   gpt2cc_cuda_architectures_from_caps(<caps> <out>)  "8.0\n9.0" (nvidia-smi's compute_cap
#       column) -> "80;90": each distinct one of sm_80 or newer, in order; older ones are left out
#       with a warning (the kernels need cp.async and bf16 tensor cores); none left -> 90.
#   gpt2cc_detect_cuda_architectures(<out>)  the same for `nvidia-smi --query-gpu=compute_cap`
#       (the nvidia-smi on PATH, or $GPT2CC_NVIDIA_SMI); 90 when there is none or it fails (no GPU,
#       no driver: a build machine for a GPU machine elsewhere).
# tests/tooling/test_detect_cuda_architectures.cmake checks both.

function(gpt2cc_cuda_architectures_from_caps caps out)
  string(REPLACE "\n" ";" lines "${caps}")
  set(archs "")
  foreach(line IN LISTS lines)
    string(STRIP "${line}" line)
    if(line STREQUAL "")
      continue()
    endif()
    if(NOT line MATCHES "^([0-9]+)\\.([0-9])$")
      message(WARNING "gpt2cc: nvidia-smi reported compute capability '${line}', not N.M: ignored")
      continue()
    endif()
    math(EXPR arch "${CMAKE_MATCH_1} * 10 + ${CMAKE_MATCH_2}")
    if(arch LESS 80)
      message(WARNING "gpt2cc: a GPU of compute capability ${line} (sm_${arch}) is present, but gpt2cc's CUDA "
                      "kernels need sm_80 or newer (cp.async, bf16 tensor cores): not compiled for it")
      continue()
    endif()
    list(APPEND archs ${arch})
  endforeach()
  list(REMOVE_DUPLICATES archs)
  if(NOT archs)
    set(archs 90)
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

function(gpt2cc_detect_cuda_architectures out)
  if(DEFINED ENV{GPT2CC_NVIDIA_SMI})
    set(smi "$ENV{GPT2CC_NVIDIA_SMI}")
  else()
    find_program(smi nvidia-smi NO_CACHE)
  endif()
  set(caps "")
  if(smi)
    execute_process(COMMAND "${smi}" --query-gpu=compute_cap --format=csv,noheader
                    OUTPUT_VARIABLE caps RESULT_VARIABLE rc ERROR_QUIET TIMEOUT 30)
    if(NOT rc EQUAL 0)
      set(caps "")
    endif()
  endif()
  gpt2cc_cuda_architectures_from_caps("${caps}" archs)
  if(caps STREQUAL "")
    message(STATUS "gpt2cc: no GPU found by nvidia-smi: CUDA code for sm_${archs} (H100/H200)")
  else()
    message(STATUS "gpt2cc: CUDA code for this machine's GPUs: ${archs}")
  endif()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()
