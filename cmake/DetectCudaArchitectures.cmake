# The default of GPT2CC_CUDA_ARCHITECTURES: the architectures of this machine's GPUs that the CUDA
# compiler can target.
#   gpt2cc_gpu_architectures(<caps> <out>)  "8.0\n9.0" (nvidia-smi's compute_cap column) ->
#       "80;90": each distinct one of sm_75 or newer, in order; older ones are left out with a
#       warning (the CUDA backend needs sm_75: fp32 there, bf16 from sm_80); none left -> "".
#   gpt2cc_cuda_architectures_for_nvcc(<archs> <nvcc_list> <out>)  "90;120" and the text of
#       `nvcc --list-gpu-arch` ("compute_80\ncompute_90\ncompute_100\n") -> "90;100": an arch the
#       nvcc lists stays; one it does not (a GPU newer than the toolkit) becomes the newest listed
#       arch below it that keeps what the GPU runs (sm_80 or newer for a GPU of sm_80 or newer:
#       bf16 and flash attention need it; sm_75 for sm_75), with a warning: CMake's arch "90" emits SASS and PTX for
#       sm_90, and the driver JIT-compiles that PTX for the newer GPU at run time. When nothing
#       listed qualifies, the arch stays (the compile then names it); an empty list (no nvcc, or
#       one without --list-gpu-arch) leaves <archs> as they are.
#   gpt2cc_detect_cuda_architectures(<out>)  the two for `nvidia-smi --query-gpu=compute_cap` (the
#       nvidia-smi on PATH, or $GPT2CC_NVIDIA_SMI) and `nvcc --list-gpu-arch` ($GPT2CC_NVCC, else
#       the nvcc CMake would take: $CUDACXX, CMAKE_CUDA_COMPILER, PATH, /usr/local/cuda/bin); 90
#       when nvidia-smi is missing, lists no GPU of sm_75 or newer (a build machine for a GPU
#       machine elsewhere) or fails (then its exit code and first line are printed: a driver/library
#       version mismatch is not the same as no GPU).
# tests/tooling/test_detect_cuda_architectures.cmake checks all three.

function(gpt2cc_gpu_architectures caps out)
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
    if(arch LESS 75)
      message(WARNING "gpt2cc: a GPU of compute capability ${line} (sm_${arch}) is present, but gpt2cc's CUDA "
                      "backend needs sm_75 or newer (fp32; bf16 from sm_80): not compiled for it")
      continue()
    endif()
    list(APPEND archs ${arch})
  endforeach()
  list(REMOVE_DUPLICATES archs)
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

function(gpt2cc_cuda_architectures_for_nvcc archs nvcc_list out)
  # "compute_75\ncompute_80\n...\ncompute_110\ncompute_103\n": not in order, so compared as numbers.
  string(REPLACE "\n" ";" lines "${nvcc_list}")
  set(listed "")
  foreach(line IN LISTS lines)
    string(STRIP "${line}" line)
    if(line MATCHES "^compute_([0-9]+)$")
      list(APPEND listed ${CMAKE_MATCH_1})
    endif()
  endforeach()
  if(NOT listed)
    set(${out} "${archs}" PARENT_SCOPE)
    return()
  endif()
  set(result "")
  foreach(arch IN LISTS archs)
    list(FIND listed ${arch} at)
    if(at GREATER_EQUAL 0)
      list(APPEND result ${arch})
      continue()
    endif()
    # Code for an older arch runs, but without what the GPU has beyond it: bf16 and flash attention
    # need code for sm_80 or newer.
    set(floor 75)
    if(arch GREATER_EQUAL 80)
      set(floor 80)
    endif()
    set(below "")
    foreach(candidate IN LISTS listed)
      if(candidate GREATER_EQUAL floor AND candidate LESS arch AND (below STREQUAL "" OR candidate GREATER below))
        set(below ${candidate})
      endif()
    endforeach()
    if(below STREQUAL "")
      message(WARNING "gpt2cc: this machine's GPU is sm_${arch}, and this nvcc can target neither it nor any "
                      "sm_${floor} or newer below it: upgrade the CUDA toolkit")
      list(APPEND result ${arch})
    else()
      message(WARNING "gpt2cc: this machine's GPU is sm_${arch}, which this nvcc cannot target: compiling for "
                      "sm_${below} instead, whose PTX the driver JIT-compiles for the GPU at run time (slower "
                      "first start). Upgrade the CUDA toolkit for native sm_${arch} code.")
      list(APPEND result ${below})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES result)
  set(${out} "${result}" PARENT_SCOPE)
endfunction()

# The text of `<nvcc> --list-gpu-arch`, or "" when there is no nvcc or it cannot say.
function(gpt2cc_nvcc_gpu_arch_list out)
  set(${out} "" PARENT_SCOPE)
  if(DEFINED ENV{GPT2CC_NVCC})
    set(nvcc "$ENV{GPT2CC_NVCC}")
  elseif(NOT "$ENV{CUDACXX}" STREQUAL "")
    get_filename_component(nvcc "$ENV{CUDACXX}" PROGRAM)
  elseif(CMAKE_CUDA_COMPILER)
    set(nvcc "${CMAKE_CUDA_COMPILER}")
  else()
    find_program(nvcc nvcc HINTS "$ENV{CUDA_PATH}/bin" /usr/local/cuda/bin NO_CACHE)
  endif()
  if(NOT nvcc)
    message(STATUS "gpt2cc: no nvcc found: GPU architectures not checked against the CUDA compiler")
    return()
  endif()
  execute_process(COMMAND "${nvcc}" --list-gpu-arch
                  OUTPUT_VARIABLE list RESULT_VARIABLE rc ERROR_QUIET TIMEOUT 30)
  if(NOT rc EQUAL 0)
    message(STATUS "gpt2cc: '${nvcc} --list-gpu-arch' failed (${rc}): GPU architectures not checked against it")
    return()
  endif()
  set(${out} "${list}" PARENT_SCOPE)
endfunction()

function(gpt2cc_detect_cuda_architectures out)
  if(DEFINED ENV{GPT2CC_NVIDIA_SMI})
    set(smi "$ENV{GPT2CC_NVIDIA_SMI}")
  else()
    find_program(smi nvidia-smi NO_CACHE)
  endif()
  if(NOT smi OR NOT EXISTS "${smi}")
    message(STATUS "gpt2cc: no nvidia-smi, so no GPU found: CUDA code for sm_90 (H100/H200)")
    set(${out} 90 PARENT_SCOPE)
    return()
  endif()
  execute_process(COMMAND "${smi}" --query-gpu=compute_cap --format=csv,noheader
                  OUTPUT_VARIABLE caps ERROR_VARIABLE errors RESULT_VARIABLE rc TIMEOUT 30)
  if(NOT rc EQUAL 0)
    # nvidia-smi says why on stdout ("Failed to initialize NVML: Driver/library version mismatch").
    string(REGEX MATCH "[^\n]+" why "${caps}\n${errors}")
    string(STRIP "${why}" why)
    if(rc MATCHES "^[0-9]+$")
      set(rc "exit code ${rc}")
    endif()
    if(NOT why STREQUAL "")
      set(rc "${rc}: ${why}")
    endif()
    message(STATUS "gpt2cc: nvidia-smi failed (${rc}): CUDA code for sm_90 (H100/H200)")
    set(${out} 90 PARENT_SCOPE)
    return()
  endif()
  gpt2cc_gpu_architectures("${caps}" archs)
  if(NOT archs)
    message(STATUS "gpt2cc: no GPU of sm_75 or newer found by nvidia-smi: CUDA code for sm_90 (H100/H200)")
    set(${out} 90 PARENT_SCOPE)
    return()
  endif()
  gpt2cc_nvcc_gpu_arch_list(nvcc_list)
  gpt2cc_cuda_architectures_for_nvcc("${archs}" "${nvcc_list}" archs)
  message(STATUS "gpt2cc: CUDA code for this machine's GPUs: ${archs}")
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()
