# cmake -DNVCC=<nvcc> -DSOURCE_DIR=<gpt2cc> -DARCHS="80;90" -DWORK_DIR=<scratch> -P check_kernel_static_smem.cmake
#
# Flash attention judges before any launch whether a kernel fits the device's shared memory
# (dynamic + static, kernels/flash_attention.cu). The dynamic part is computed from the layouts;
# the static part is written out as kBackwardFusedStaticSmem (the fused backward's ticket) and 0
# for the other kernels. This compiles kernels/flash_attention.cu for each architecture the build
# targets with `ptxas -v` and checks each flash kernel's static shared memory against those figures,
# so a change to the kernels that moves them fails here, on a machine without a GPU.
foreach(var NVCC SOURCE_DIR ARCHS WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_kernel_static_smem.cmake: -D${var}=... is required")
  endif()
endforeach()

file(READ "${SOURCE_DIR}/kernels/flash_attention_device.cuh" header)
if(NOT header MATCHES "constexpr size_t kBackwardFusedStaticSmem = ([0-9]+);")
  message(FATAL_ERROR "kernels/flash_attention_device.cuh: no 'constexpr size_t kBackwardFusedStaticSmem = N;'")
endif()
set(fused_static ${CMAKE_MATCH_1})

file(MAKE_DIRECTORY "${WORK_DIR}")
set(failures 0)
foreach(arch IN LISTS ARCHS)
  string(REGEX MATCH "^[0-9]+" number "${arch}")
  if(number AND number LESS 80)
    # Below sm_80 the flash kernels' bodies are a trap (never launched): nothing to count.
    message(STATUS "sm_${arch}: flash kernels are traps there (no cp.async, no bf16 mma.sync): not checked")
    continue()
  endif()
  execute_process(
    COMMAND "${NVCC}" -I${SOURCE_DIR} -O3 -DNDEBUG --generate-code=arch=compute_${arch},code=sm_${arch}
            --expt-relaxed-constexpr -std=c++20 -Xptxas -v -c "${SOURCE_DIR}/kernels/flash_attention.cu"
            -o "${WORK_DIR}/flash_attention_sm${arch}.o"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nvcc for sm_${arch} failed (${rc}):\n${err}")
  endif()
  string(REPLACE "\n" ";" lines "${out}\n${err}")
  set(kernel "")
  set(seen 0)
  set(fused_seen 0)
  foreach(line IN LISTS lines)
    if(line MATCHES "Compiling entry function '([^']+)'")
      set(kernel "${CMAKE_MATCH_1}")
    elseif(line MATCHES "Used ([0-9]+) registers" AND kernel MATCHES "flash_attention_([a-z_]+)_kernelIL?i?([0-9]+)E?L?i?([0-9]*)E")
      set(name "${CMAKE_MATCH_1}<${CMAKE_MATCH_2}${CMAKE_MATCH_3}>")
      if(CMAKE_MATCH_3)
        set(name "${CMAKE_MATCH_1}<HS ${CMAKE_MATCH_2}, ${CMAKE_MATCH_3} rows>")
      else()
        set(name "${CMAKE_MATCH_1}<HS ${CMAKE_MATCH_2}>")
      endif()
      set(smem 0)
      if(line MATCHES "([0-9]+) bytes smem")
        set(smem ${CMAKE_MATCH_1})
      endif()
      if(kernel MATCHES "backward_fused_kernel")
        set(want ${fused_static})
        math(EXPR fused_seen "${fused_seen} + 1")
      else()
        set(want 0)
      endif()
      math(EXPR seen "${seen} + 1")
      if(NOT smem EQUAL want)
        message(SEND_ERROR "sm_${arch} ${name}: ${smem} bytes of static shared memory, the launcher counts ${want}")
        math(EXPR failures "${failures} + 1")
      else()
        message(STATUS "sm_${arch} ${name}: ${smem} bytes static shared memory (${line})")
      endif()
      set(kernel "")
    endif()
  endforeach()
  # 4 (HS, rows) pairs x forward, dK/dV, dQ, fused + 2 delta kernels; fewer means the parsing broke.
  if(seen LESS 18 OR NOT fused_seen EQUAL 4)
    message(FATAL_ERROR "sm_${arch}: found ${seen} flash kernels (${fused_seen} fused) in ptxas -v's report, "
                        "expected 18 (4 fused):\n${err}")
  endif()
endforeach()
if(failures GREATER 0)
  message(FATAL_ERROR "${failures} flash kernel(s) with static shared memory the launcher does not count")
endif()
