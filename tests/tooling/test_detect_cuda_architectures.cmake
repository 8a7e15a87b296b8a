# cmake -DSOURCE_DIR=<gpt2cc> -DWORK_DIR=<scratch> -P test_detect_cuda_architectures.cmake: the
# default CUDA architectures (cmake/DetectCudaArchitectures.cmake) for nvidia-smi answers, with a
# fake nvidia-smi for the detection itself.
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
    "7.5|90"                    # T4 only: too old, the default remains
    "7.0\n8.0|80"               # V100 + A100: the A100
    "|90"                       # no GPU
    "garbage|90")               # not a capability
  string(REPLACE "\\n" "\n" case "${case}")
  string(FIND "${case}" "|" bar)
  string(SUBSTRING "${case}" 0 ${bar} caps)
  math(EXPR rest "${bar} + 1")
  string(SUBSTRING "${case}" ${rest} -1 want)
  gpt2cc_cuda_architectures_from_caps("${caps}" got)
  expect("caps '${caps}'" "${got}" "${want}")
endforeach()

# the detection: nvidia-smi answering, failing, missing
file(MAKE_DIRECTORY "${WORK_DIR}")
set(fake "${WORK_DIR}/nvidia-smi-fake")
file(WRITE "${fake}" "#!/bin/sh\n[ \"$1 $2\" = '--query-gpu=compute_cap --format=csv,noheader' ] || exit 3\nprintf '8.9\\n8.9\\n'\n")
file(CHMOD "${fake}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
set(ENV{GPT2CC_NVIDIA_SMI} "${fake}")
gpt2cc_detect_cuda_architectures(got)
expect("fake nvidia-smi listing two sm_89 GPUs" "${got}" "89")

file(WRITE "${fake}" "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver'\nexit 9\n")
gpt2cc_detect_cuda_architectures(got)
expect("nvidia-smi failing (no driver)" "${got}" "90")

set(ENV{GPT2CC_NVIDIA_SMI} "${WORK_DIR}/no-such-nvidia-smi")
gpt2cc_detect_cuda_architectures(got)
expect("no nvidia-smi" "${got}" "90")
