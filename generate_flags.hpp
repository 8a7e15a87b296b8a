// generate's flags (generate.cpp): the options table, and the request they make, read before
// anything is loaded: each flag checked on its own (the limits that need the model, the score
// window and the prompt's length, are checked after the load) and the text read (the prompt, or
// the file --score names).
#pragma once

#include <string>

#include <cxxopts.hpp>

#include "core/backend.hpp"
#include "core/generation.hpp"
#include "core/sampler.hpp"

namespace gpt2cc {

cxxopts::Options make_generate_options();

struct GenerateRequest {
  std::string checkpoint_path;
  bool tokenizer_given = false;  // --tokenizer; else the checkpoint's tokenizer
  std::string tokenizer_dir;     // --tokenizer's value
  std::string device = "cpu";    // or cuda
  int cuda_device = 0;
  DType dtype = DType::fp32;
  int threads = 0;
  int num_samples = 1;
  int batch_size = 0;  // samples decoded together; 0: all of num_samples
  double max_kv_cache_gib = 8;
  SampleConfig sampling;
  GenerationConfig gen;
  bool ignore_eot = false;
  bool stats = false;
  bool scoring = false;   // --score: the loss of a text file, nothing generated
  std::string score_path;
  int score_window = 0;   // 0: the model's context
  int score_stride = 0;   // 0: half the window
  std::string text;       // the prompt, or the text to score: valid UTF-8, not empty
};

// InputError naming the flag for a value out of range, a flag that does nothing beside the others
// (a sampling flag with --score, --score-window without it), invalid UTF-8 or an empty text.
GenerateRequest parse_generate_request(const cxxopts::ParseResult& args);

}  // namespace gpt2cc
