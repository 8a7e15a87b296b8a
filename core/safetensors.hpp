// The safetensors file format (Hugging Face, https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin,
// end]}, optional "__metadata__": {string: string}}, then the tensors' bytes, little-endian and
// row-major, at those offsets from the end of the header, covering the data without holes or
// overlaps. Reading checks all of that before any tensor is used and converts F32, F16 and BF16
// tensors to float; writing emits F32 atomically (a temporary file, fsync, rename).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace gpt2cc::safetensors {

struct TensorInfo {
  std::string dtype;          // "F32", "F16", "BF16", ... as the file names it
  std::vector<size_t> shape;  // empty for a scalar
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  size_t numel() const;  // numel(shape)
};

class File {
 public:
  // Reads and validates the header; throws InputError naming the file, what was expected and what
  // was found (not a safetensors file, truncated, bad JSON, an unknown dtype, a shape that does not
  // match its bytes, offsets out of the file, overlapping or leaving holes).
  explicit File(const std::string& path);
  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // InputError naming the file for a missing one
  // InputError unless read_float can read the tensor: F32, F16 or BF16 (also checks it is there).
  void check_readable_as_float(const std::string& name) const;
  // The tensor's elements as float (F32 as is, F16 and BF16 widened exactly); InputError for
  // another dtype or a missing tensor.
  std::vector<float> read_float(const std::string& name) const;
  // Elements [first, first + out.size()) of the tensor, in its row-major order, into out (a piece
  // of a tensor too large to hold twice); InputError as above, or for a range past its end.
  void read_float(const std::string& name, size_t first, std::span<float> out) const;

 private:
  std::string path_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One F32 tensor to write; `data` holds numel(shape) floats.
struct F32Tensor {
  std::string name;
  std::vector<size_t> shape;
  const float* data = nullptr;
};

// Writes `tensors` (in this order, each 8-byte aligned as the header is padded to) and `metadata`
// to path atomically (core/atomic_file.hpp): the old file survives a failure. Throws Error
// naming the path on I/O failure.
void write_f32(const std::string& path, const std::vector<F32Tensor>& tensors,
               const std::map<std::string, std::string>& metadata = {});

// The same file with the values streamed, so that no tensor need be held whole: `produce`, called
// once, passes every tensor's floats to `write` in the order of `tensors`, in pieces of any size,
// and they go to the file as they come. An exception from `produce` passes through and the old
// file survives; producing more or fewer floats than the shapes hold is an Error (a bug).
struct F32TensorSpec {
  std::string name;
  std::vector<size_t> shape;
};
using F32Writer = std::function<void(std::span<const float> values)>;
void write_f32(const std::string& path, const std::vector<F32TensorSpec>& tensors,
               const std::function<void(const F32Writer& write)>& produce,
               const std::map<std::string, std::string>& metadata = {});

// "[2, 3]": a shape as error messages show it.
std::string shape_text(const std::vector<size_t>& shape);
// Elements of a tensor of this shape (1 for a scalar).
size_t numel(const std::vector<size_t>& shape);

// JSON from an untrusted file (a safetensors header, a Hugging Face config.json): nesting deeper
// than max_depth makes the result discarded (is_discarded()), so that nothing later recurses
// through a hostile structure (nlohmann's dump and comparisons do). Malformed JSON: discarded too.
nlohmann::json parse_untrusted_json(const std::string& text, int max_depth = 8);
// The same, for a caller that reports what is wrong: malformed JSON throws nlohmann's parse_error
// (which says where), nesting deeper than max_depth an InputError ("it nests deeper than N levels").
nlohmann::json parse_untrusted_json_or_throw(const std::string& text, int max_depth = 8);


// IEEE binary16 and bfloat16 bits to float (exact: every value of both is a float).
float half_to_float(uint16_t bits);
float bf16_to_float(uint16_t bits);

}  // namespace gpt2cc::safetensors
