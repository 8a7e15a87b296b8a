#!/usr/bin/env bash
# The gpt2cc demo: prepares the TinyStories sample, trains a small model, evaluates and generates.
# (Filled in as train and generate land; until then it says so.)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f train.cpp || ! -f generate.cpp ]]; then
  echo "gpt2cc demo: train and generate are not built yet; nothing to demonstrate. Run scripts/test.sh for the tests."
  exit 0
fi
