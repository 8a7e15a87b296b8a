// safetensors reading and writing (format in core/safetensors.hpp).
#include "core/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/bf16.hpp"
#include "core/check.hpp"

namespace gpt2cc::safetensors {
namespace {

// The reference implementation refuses headers over 100 MB; a GPT-2 header is a few KB.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// Bytes per element of every dtype the format defines (0: not a whole number of bytes).
size_t dtype_bytes(const std::string& dtype) {
  static const std::map<std::string, size_t> widths = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"F64", 8},     {"I64", 8}, {"U64", 8}};
  auto it = widths.find(dtype);
  return it == widths.end() ? 0 : it->second;
}

}  // namespace

std::string shape_text(const std::vector<size_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

size_t numel(const std::vector<size_t>& shape) {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  return n;
}

size_t TensorInfo::numel() const { return safetensors::numel(shape); }

namespace {

// The header's JSON text, read after its 8-byte little-endian length; InputError for a file too
// short, a length past the file or the cap.
std::string read_header_text(const std::string& path, std::ifstream& in, uint64_t size) {
  unsigned char length_bytes[8];
  INPUT_CHECK(size >= 8 && in.read(reinterpret_cast<char*>(length_bytes), 8),
              "{} is not a safetensors file: {} bytes, shorter than the 8-byte header length", path, size);
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = header_bytes << 8 | length_bytes[i];
  INPUT_CHECK(header_bytes >= 2 && header_bytes <= kMaxHeaderBytes && header_bytes <= size - 8,
              "{} is not a safetensors file (or is truncated): its header length is {} bytes, the file has {} after "
              "the length",
              path, header_bytes, size - 8);
  std::string text(header_bytes, '\0');
  INPUT_CHECK(in.read(text.data(), static_cast<std::streamsize>(header_bytes)), "reading the header of {} failed",
              path);
  return text;
}

// " 3.5" for a JSON number (what a message shows after its type name), "" for anything else.
std::string number_text(const nlohmann::json& value) { return value.is_number() ? format(" {}", value.dump()) : ""; }

// One tensor's entry of the header, checked: its dtype one the format defines, its shape and
// offsets sizes, its bytes inside the data section and exactly numel * width of them.
TensorInfo parse_tensor_entry(const std::string& path, const std::string& name, const nlohmann::json& entry,
                              uint64_t data_bytes) {
  INPUT_CHECK(entry.is_object() && entry.contains("dtype") && entry["dtype"].is_string() && entry.contains("shape") &&
                  entry["shape"].is_array() && entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                  entry["data_offsets"].size() == 2,
              "{}: tensor '{}' needs \"dtype\" (a string), \"shape\" (an array) and two \"data_offsets\", got "
              "a JSON {}{}",
              path, name, entry.type_name(), entry.is_object() ? " without them" : "");
  TensorInfo t;
  t.dtype = entry["dtype"].get<std::string>();
  const size_t width = dtype_bytes(t.dtype);
  INPUT_CHECK(width != 0, "{}: tensor '{}' has dtype '{}', which safetensors does not define", path, name, t.dtype);
  for (const auto& d : entry["shape"]) {
    INPUT_CHECK(d.is_number_unsigned(), "{}: tensor '{}' has a shape entry ({}{}) that is not a size", path, name,
                d.type_name(), number_text(d));
    t.shape.push_back(d.get<size_t>());
  }
  for (const auto& o : entry["data_offsets"])
    INPUT_CHECK(o.is_number_unsigned(), "{}: tensor '{}' has a data offset ({}{}) that is not a size", path, name,
                o.type_name(), number_text(o));
  t.begin = entry["data_offsets"][0].get<uint64_t>();
  t.end = entry["data_offsets"][1].get<uint64_t>();
  INPUT_CHECK(t.begin <= t.end && t.end <= data_bytes,
              "{} is truncated or corrupt: tensor '{}' lies at bytes [{}, {}) of a data section of {} bytes", path,
              name, t.begin, t.end, data_bytes);
  // numel * width == end - begin, without overflowing on a hostile shape.
  uint64_t bytes = width;
  const bool empty = std::find(t.shape.begin(), t.shape.end(), size_t(0)) != t.shape.end();
  for (size_t d : t.shape) {
    INPUT_CHECK(empty || bytes <= UINT64_MAX / d, "{}: tensor '{}' has a shape {} too large to address", path, name,
                shape_text(t.shape));
    bytes = empty ? 0 : bytes * d;
  }
  INPUT_CHECK(bytes == t.end - t.begin, "{}: tensor '{}' of shape {} ({}) needs {} bytes, its offsets give {}", path,
              name, shape_text(t.shape), t.dtype, bytes, t.end - t.begin);
  return t;
}

// The tensors tile the data section: sorted by offset, each starts where the last ended.
void check_tiling(const std::string& path, const std::map<std::string, TensorInfo>& tensors, uint64_t data_bytes) {
  std::vector<const std::pair<const std::string, TensorInfo>*> order;
  for (const auto& entry : tensors) order.push_back(&entry);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {  // an empty tensor before a full one at its offset
    return std::pair(a->second.begin, a->second.end) < std::pair(b->second.begin, b->second.end);
  });
  uint64_t at = 0;
  for (const auto* entry : order) {
    INPUT_CHECK(entry->second.begin == at, "{} is corrupt: tensor '{}' starts at byte {} of the data, expected {} ({})",
                path, entry->first, entry->second.begin, at,
                entry->second.begin < at ? "it overlaps the tensor before it" : "a hole before it");
    at = entry->second.end;
  }
  INPUT_CHECK(at == data_bytes, "{} is corrupt: its tensors cover {} bytes of a {}-byte data section", path, at,
              data_bytes);
}

}  // namespace

File::File(const std::string& path) : path_(path) {
  std::ifstream in(path, std::ios::binary);
  INPUT_CHECK(in.good(), "cannot open safetensors file {}: {}", path, std::strerror(errno));
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  INPUT_CHECK(!ec, "cannot read the size of {}: {}", path, ec.message());
  const std::string text = read_header_text(path, in, size);
  data_start_ = 8 + text.size();
  // The format nests 3 deep (the header, an entry, its shape); a little room beyond that.
  const nlohmann::json header = parse_untrusted_json(text, 4);
  INPUT_CHECK(!header.is_discarded() && header.is_object(),
              "{} is not a safetensors file: its {}-byte header is not a JSON object (or nests deeper than the "
              "format does)",
              path, text.size());
  const uint64_t data_bytes = size - data_start_;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      INPUT_CHECK(entry.is_object(), "{}: __metadata__ must be an object of strings", path);
      for (const auto& [key, value] : entry.items()) {
        INPUT_CHECK(value.is_string(), "{}: __metadata__ value of '{}' is not a string", path, key);
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    tensors_.emplace(name, parse_tensor_entry(path, name, entry, data_bytes));
  }
  check_tiling(path, tensors_, data_bytes);
}

const TensorInfo& File::info(const std::string& name) const {
  auto it = tensors_.find(name);
  INPUT_CHECK(it != tensors_.end(), "{} has no tensor '{}'", path_, name);
  return it->second;
}

std::vector<float> File::read_float(const std::string& name) const {
  std::vector<float> out(info(name).numel());
  read_float(name, 0, out);
  return out;
}

void File::check_readable_as_float(const std::string& name) const {
  const TensorInfo& t = info(name);
  INPUT_CHECK(t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16",
              "{}: tensor '{}' is {}; gpt2cc reads F32, F16 and BF16", path_, name, t.dtype);
}

void File::read_float(const std::string& name, size_t first, std::span<float> out) const {
  check_readable_as_float(name);
  const TensorInfo& t = info(name);
  const size_t n = t.numel();
  INPUT_CHECK(first <= n && out.size() <= n - first, "{}: elements [{}, {}) of tensor '{}' are past its {}", path_,
              first, first + out.size(), name, n);
  if (out.empty()) return;
  const size_t width = t.dtype == "F32" ? 4 : 2;
  std::ifstream in(path_, std::ios::binary);
  INPUT_CHECK(in.good(), "cannot open {}: {}", path_, std::strerror(errno));
  std::vector<char> bytes(out.size() * width);
  in.seekg(static_cast<std::streamoff>(data_start_ + t.begin + first * width));
  INPUT_CHECK(in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())), "reading tensor '{}' of {} failed",
              name, path_);
  static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
  if (t.dtype == "F32") {
    std::memcpy(out.data(), bytes.data(), bytes.size());
  } else {
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t bits;
      std::memcpy(&bits, bytes.data() + 2 * i, 2);
      out[i] = t.dtype == "F16" ? half_to_float(bits) : bf16_to_float(bits);
    }
  }
}

void write_f32(const std::string& path, const std::vector<F32TensorSpec>& tensors,
               const std::function<void(const F32Writer& write)>& produce,
               const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const F32TensorSpec& t : tensors) {
    const size_t n = numel(t.shape);
    header[t.name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + 4 * n}}};
    offset += 4 * n;
  }
  const uint64_t data_bytes = offset;
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // pad with spaces: the data starts 8-byte aligned

  write_file_atomic(path, [&](FILE* f) {
    unsigned char length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
    bool ok = std::fwrite(length, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
    uint64_t written = 0;
    produce([&](std::span<const float> values) {
      written += values.size_bytes();
      ENSURE(written <= data_bytes, "safetensors {}: more values produced than the {} bytes its tensors hold", path,
             data_bytes);
      ok = ok && (values.empty() || std::fwrite(values.data(), sizeof(float), values.size(), f) == values.size());
    });
    ENSURE(written == data_bytes, "safetensors {}: {} bytes of values produced for tensors of {}", path, written,
           data_bytes);
    return ok;
  });
}

void write_f32(const std::string& path, const std::vector<F32Tensor>& tensors,
               const std::map<std::string, std::string>& metadata) {
  std::vector<F32TensorSpec> specs;
  for (const F32Tensor& t : tensors) specs.push_back({t.name, t.shape});
  write_f32(
      path, specs,
      [&](const F32Writer& write) {
        for (const F32Tensor& t : tensors) write(std::span<const float>(t.data, numel(t.shape)));
      },
      metadata);
}

namespace {
// text parsed keeping no value nested deeper than max_depth; too_deep says whether one was.
nlohmann::json parse_within_depth(const std::string& text, int max_depth, bool allow_exceptions, bool& too_deep) {
  too_deep = false;
  nlohmann::json::parser_callback_t limit = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > max_depth) too_deep = true;
    return depth <= max_depth;  // a deeper value is not kept
  };
  return nlohmann::json::parse(text, limit, allow_exceptions);
}
}  // namespace

nlohmann::json parse_untrusted_json(const std::string& text, int max_depth) {
  bool too_deep = false;
  nlohmann::json j = parse_within_depth(text, max_depth, false, too_deep);
  return too_deep ? nlohmann::json(nlohmann::json::value_t::discarded) : j;
}

nlohmann::json parse_untrusted_json_or_throw(const std::string& text, int max_depth) {
  bool too_deep = false;
  nlohmann::json j = parse_within_depth(text, max_depth, true, too_deep);
  INPUT_CHECK(!too_deep, "it nests deeper than {} levels", max_depth);
  return j;
}

// binary16: 1 sign, 5 exponent (bias 15), 10 fraction bits. Subnormals are fraction * 2^-24.
float half_to_float(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu, fraction = bits & 0x3ffu;
  uint32_t out;
  if (exponent == 0x1f) {
    out = sign | 0x7f800000u | (fraction << 13);  // inf, or NaN with its payload
  } else if (exponent != 0) {
    out = sign | ((exponent + 112) << 23) | (fraction << 13);  // 112 = 127 - 15
  } else {
    const float magnitude = std::ldexp(static_cast<float>(fraction), -24);  // zero or subnormal: exact
    return sign ? -magnitude : magnitude;
  }
  return std::bit_cast<float>(out);
}

float bf16_to_float(uint16_t bits) { return widen_bf16(bits); }

}  // namespace gpt2cc::safetensors
