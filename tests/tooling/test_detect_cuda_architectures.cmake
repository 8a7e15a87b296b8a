# cmake -DSOURCE_DIR=<gpt2cc> -DWORK_DIR=<scratch> -P test_detect_cuda_architectures.cmake: the
# default CUDA architectures (cmake/DetectCudaArchitectures.cmake) for nvidia-smi answers and
# `nvcc --list-gpu-arch` lists, with a fake nvidia-smi and a fake nvcc for the detection itself.
include("${SOURCE_DIR}/cmake/DetectCudaArchitectures.cmake")

set(failures 0)
function(expect what got want)
  if(NOT "${got}" STREQUAL "${want}")
    message(SEND_ERROR "${what}: got '${got}', want '${want}'")
  endif()
endfunction()

# compute_cap column -> architectures
foreach(case
    "9.0|90"                    # one H100
    "9.0\n9.0\n9.0\n|90"        # eight of them list the same one: once
    "8.0|80"                    # A100
    "8.9\n9.0|89;90"            # mixed machine: both, in order
    " 8.6 \n|86"                # spaces, trailing newline
    "12.0|120"                  # two-digit major
    "7.5|75"                    # T4: fp32 only, but supported
    "7.5\n9.0|75;90"            # T4 + H100
    "7.0|"                      # V100 only: too old (the detection then takes 90, below)
    "7.0\n8.0|80"               # V100 + A100: the A100
    "|"                         # no GPU
    "garbage|")                 # not a capability
  string(REPLACE "\\n" "\n" case "${case}")
  string(FIND "${case}" "|" bar)
  string(SUBSTRING "${case}" 0 ${bar} caps)
  math(EXPR rest "${bar} + 1")
  string(SUBSTRING "${case}" ${rest} -1 want)
  gpt2cc_gpu_architectures("${caps}" got)
  expect("caps '${caps}'" "${got}" "${want}")
endforeach()

# architectures x `nvcc --list-gpu-arch` -> what the nvcc can compile. A GPU newer than the nvcc
# gets the newest listed arch of sm_80 or newer below it (sm_75 or newer for an sm_75 GPU: bf16 and
# flash attention need code for sm_80): that arch's PTX is JIT-compiled for the GPU by the driver
# (PTX runs on any later GPU), so a 9.0 GPU with an nvcc lacking 90 gets 89.
set(nvcc13 "compute_75\ncompute_80\ncompute_86\ncompute_87\ncompute_88\ncompute_89\ncompute_90\ncompute_100\ncompute_110\ncompute_103\ncompute_120\ncompute_121\n")
set(nvcc12 "compute_50\ncompute_52\ncompute_60\ncompute_70\ncompute_75\ncompute_80\ncompute_86\ncompute_89\ncompute_90\ncompute_100\n")
foreach(case
    "90|${nvcc13}|90"                                # listed: unchanged
    "80;89;121|${nvcc13}|80;89;121"                  # all listed
    "120|${nvcc12}|100"                              # Blackwell GPU, nvcc up to compute_100
    "90|compute_80\ncompute_86\ncompute_89\n|89"     # no 90: the 89 below it
    "86|compute_75\ncompute_80\ncompute_90\n|80"     # the one below, not the one above
    "103|compute_80\ncompute_90\ncompute_110\ncompute_100\n|100" # newest by number, not by place
    "90;120|${nvcc12}|90;100"                        # one kept, one replaced, in order
    "100;120|${nvcc12}|100"                          # both become 100: once
    "120| compute_90 \r\n compute_100 \r\n|100"      # spaces, CRLF
    "120|compute_75\ncompute_70\n|120"               # nothing of sm_80 or newer below: stays (not 75)
    "86|compute_75\ncompute_90\n|86"                 # not 75 for an sm_80+ GPU either
    "75|${nvcc13}|75"                                # T4: listed
    "75|compute_70\ncompute_80\n|75"                 # nothing of sm_75 or newer below 75: stays
    "120||120"                                       # no nvcc: unchanged
    "120|nvcc fatal : Unknown option '--list-gpu-arch'\n|120") # an nvcc without the option
  string(FIND "${case}" "|" first)
  string(FIND "${case}" "|" last REVERSE)
  string(SUBSTRING "${case}" 0 ${first} archs)
  math(EXPR start "${first} + 1")
  math(EXPR length "${last} - ${start}")
  string(SUBSTRING "${case}" ${start} ${length} listing)
  math(EXPR start "${last} + 1")
  string(SUBSTRING "${case}" ${start} -1 want)
  gpt2cc_cuda_architectures_for_nvcc("${archs}" "${listing}" got)
  string(REPLACE "\n" "\\n" shown "${listing}")
  expect("archs '${archs}' with nvcc listing '${shown}'" "${got}" "${want}")
endforeach()

# The detection, in a child cmake so that its messages can be checked too: fake nvidia-smi and
# nvcc answering, failing, missing.
file(MAKE_DIRECTORY "${WORK_DIR}")
file(WRITE "${WORK_DIR}/detect.cmake"
     "include(\"${SOURCE_DIR}/cmake/DetectCudaArchitectures.cmake\")\n"
     "gpt2cc_detect_cuda_architectures(archs)\n"
     "message(STATUS \"archs=[\${archs}]\")\n")
function(detect what want_archs)  # then the texts the messages must contain
  execute_process(COMMAND "${CMAKE_COMMAND}" -P "${WORK_DIR}/detect.cmake"
                  OUTPUT_VARIABLE log ERROR_VARIABLE log RESULT_VARIABLE rc)
  string(REGEX REPLACE "[ \n]+" " " log "${log}")  # messages wrap their lines
  if(NOT rc EQUAL 0 OR NOT log MATCHES "archs=\\[([^]]*)\\]")
    message(SEND_ERROR "${what}: the detection failed (${rc}): ${log}")
    return()
  endif()
  expect("${what}" "${CMAKE_MATCH_1}" "${want_archs}")
  foreach(text IN LISTS ARGN)
    string(FIND "${log}" "${text}" at)
    if(at EQUAL -1)
      message(SEND_ERROR "${what}: no '${text}' in the messages: ${log}")
    endif()
  endforeach()
endfunction()
function(fake name script)
  file(WRITE "${WORK_DIR}/${name}" "#!/bin/sh\n${script}\n")
  file(CHMOD "${WORK_DIR}/${name}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
endfunction()
set(ENV{GPT2CC_NVIDIA_SMI} "${WORK_DIR}/nvidia-smi-fake")
set(ENV{GPT2CC_NVCC} "${WORK_DIR}/nvcc-fake")
set(smi_args "[ \"$1 $2\" = '--query-gpu=compute_cap --format=csv,noheader' ] || exit 3")
set(nvcc_args "[ \"$*\" = '--list-gpu-arch' ] || exit 3")

fake(nvidia-smi-fake "${smi_args}\nprintf '8.9\\n8.9\\n'")
fake(nvcc-fake "${nvcc_args}\nprintf 'compute_80\\ncompute_89\\ncompute_90\\n'")
detect("fake nvidia-smi listing two sm_89 GPUs" "89" "CUDA code for this machine's GPUs: 89")

fake(nvidia-smi-fake "${smi_args}\nprintf '12.0\\n9.0\\n'")
fake(nvcc-fake "${nvcc_args}\nprintf 'compute_80\\ncompute_90\\ncompute_100\\n'")
detect("sm_120 and sm_90 GPUs, an nvcc up to compute_100" "100;90"
       "GPU is sm_120, which this nvcc cannot target" "sm_100 instead" "JIT-compiles"
       "Upgrade the CUDA toolkit for native sm_120 code" "CUDA code for this machine's GPUs: 100;90")

fake(nvcc-fake "echo 'nvcc fatal : Unknown option' >&2\nexit 1")
detect("an nvcc without --list-gpu-arch" "120;90" "--list-gpu-arch' failed (1)")

set(ENV{GPT2CC_NVCC} "${WORK_DIR}/no-such-nvcc")
detect("no nvcc" "120;90" "GPU architectures not checked")

fake(nvidia-smi-fake "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'\necho 'second line'\nexit 9")
detect("nvidia-smi failing (no driver)" "90"
       "nvidia-smi failed (exit code 9: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver)")

fake(nvidia-smi-fake "echo 'Failed to initialize NVML: Driver/library version mismatch' >&2\nexit 18")
detect("nvidia-smi failing on stderr (driver/library mismatch)" "90"
       "nvidia-smi failed (exit code 18: Failed to initialize NVML: Driver/library version mismatch)")

fake(nvidia-smi-fake "${smi_args}\nprintf '7.5\\n'")
fake(nvcc-fake "${nvcc_args}\nprintf 'compute_75\\ncompute_80\\ncompute_90\\n'")
detect("nvidia-smi listing only a T4" "75" "CUDA code for this machine's GPUs: 75")

fake(nvidia-smi-fake "${smi_args}\nprintf '7.0\\n'")
detect("nvidia-smi listing only a V100" "90" "sm_70) is present, but gpt2cc's CUDA backend needs sm_75 or newer"
       "no GPU of sm_75 or newer found by nvidia-smi")

set(ENV{GPT2CC_NVIDIA_SMI} "${WORK_DIR}/no-such-nvidia-smi")
detect("no nvidia-smi" "90" "no nvidia-smi")
