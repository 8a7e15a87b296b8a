// GPT2CC_KERNELS: the kernel designs the CUDA backend takes (kernels/kernel_designs.cuh). Host
// code only.
#include "kernels/kernel_designs.cuh"

#include <cstdlib>
#include <string_view>
#include <vector>

#include "core/check.hpp"

namespace gpt2cc::cuda {
namespace {

template <class Enum>
struct Choice {
  std::string_view text;
  Enum value;
};

constexpr Choice<FusedClassifier> kClassifierChoices[] = {{"auto", FusedClassifier::kAuto},
                                                          {"cached-row", FusedClassifier::kCachedRow},
                                                          {"streamed", FusedClassifier::kStreamed}};
constexpr Choice<LayerNormBackward> kLayerNormChoices[] = {{"auto", LayerNormBackward::kAuto},
                                                           {"fused", LayerNormBackward::kFused},
                                                           {"two-pass", LayerNormBackward::kTwoPass}};
constexpr Choice<FlashBackward> kFlashBackwardChoices[] = {
    {"auto", FlashBackward::kAuto}, {"split", FlashBackward::kSplit}, {"fused", FlashBackward::kFused}};
constexpr Choice<FlashTile> kFlashTileChoices[] = {
    {"auto", FlashTile::kAuto}, {"64", FlashTile::kRows64}, {"128", FlashTile::kRows128}};
constexpr Choice<BiasGradient> kBiasGradientChoices[] = {
    {"auto", BiasGradient::kAuto}, {"column-sum", BiasGradient::kColumnSum}, {"epilogue", BiasGradient::kEpilogue}};
constexpr Choice<GemmAlignment> kGemmAlignmentChoices[] = {
    {"auto", GemmAlignment::kAuto}, {"operand", GemmAlignment::kOperand}, {"16", GemmAlignment::k16}};
constexpr Choice<GemmSplitK> kGemmSplitKChoices[] = {
    {"auto", GemmSplitK::kAuto}, {"fp32", GemmSplitK::kFp32}, {"any", GemmSplitK::kAny}};
constexpr Choice<GemmWorkspace> kGemmWorkspaceChoices[] = {
    {"auto", GemmWorkspace::kAuto}, {"32", GemmWorkspace::k32MiB}, {"256", GemmWorkspace::k256MiB}};
constexpr Choice<GeluFusion> kGeluChoices[] = {
    {"auto", GeluFusion::kAuto}, {"epilogue", GeluFusion::kEpilogue}, {"separate", GeluFusion::kSeparate}};

// One name of the variable: reads and writes its field of a KernelDesigns by text.
struct Field {
  std::string_view name;
  std::string values;                                  // "auto | cached-row | streamed"
  bool (*set)(KernelDesigns&, std::string_view text);  // false: not one of the values
  std::string_view (*get)(const KernelDesigns&);
};

// out, then `separator` unless out was empty, then item.
void append_listed(std::string& out, std::string_view separator, std::string_view item) {
  if (!out.empty()) out.append(separator);
  out.append(item);
}

template <class Enum, size_t N>
std::string values_of(const Choice<Enum> (&choices)[N]) {
  std::string out;
  for (const auto& c : choices) append_listed(out, " | ", c.text);
  return out;
}
template <class Enum, size_t N>
bool set_from(const Choice<Enum> (&choices)[N], Enum& field, std::string_view text) {
  for (const auto& c : choices)
    if (c.text == text) {
      field = c.value;
      return true;
    }
  return false;
}
template <class Enum, size_t N>
std::string_view text_of(const Choice<Enum> (&choices)[N], Enum value) {
  for (const auto& c : choices)
    if (c.value == value) return c.text;
  return "?";
}

// The field of KernelDesigns at Member, whose values are Choices.
template <auto Member, const auto& Choices>
Field make_field(std::string_view name) {
  return Field{name, values_of(Choices),
               [](KernelDesigns& d, std::string_view text) { return set_from(Choices, d.*Member, text); },
               [](const KernelDesigns& d) { return text_of(Choices, d.*Member); }};
}

const std::vector<Field>& fields() {
  static const std::vector<Field> all = {
      make_field<&KernelDesigns::classifier, kClassifierChoices>("classifier"),
      make_field<&KernelDesigns::layernorm_backward, kLayerNormChoices>("layernorm-backward"),
      make_field<&KernelDesigns::flash_backward, kFlashBackwardChoices>("flash-backward"),
      make_field<&KernelDesigns::flash_tile, kFlashTileChoices>("flash-tile"),
      make_field<&KernelDesigns::bias_gradient, kBiasGradientChoices>("bias-grad"),
      make_field<&KernelDesigns::gemm_alignment, kGemmAlignmentChoices>("gemm-alignment"),
      make_field<&KernelDesigns::gemm_split_k, kGemmSplitKChoices>("gemm-split-k"),
      make_field<&KernelDesigns::gemm_workspace, kGemmWorkspaceChoices>("gemm-workspace"),
      make_field<&KernelDesigns::gelu, kGeluChoices>("gelu"),
  };
  return all;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

std::string field_names() {
  std::string out;
  for (const Field& f : fields()) append_listed(out, ", ", f.name);
  return out;
}

}  // namespace

KernelDesigns parse_kernel_designs(const std::string& text) {
  KernelDesigns designs;
  std::vector<std::string_view> seen;
  std::string_view rest = text;
  while (!trimmed(rest).empty()) {
    const size_t comma = rest.find(',');
    const std::string_view entry = trimmed(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    const size_t equals = entry.find('=');
    INPUT_CHECK(equals != std::string_view::npos, "{}: entry '{}' is not NAME=VALUE (names: {}); the value was '{}'",
                kKernelDesignsVariable, entry, field_names(), text);
    const std::string_view name = trimmed(entry.substr(0, equals));
    const std::string_view value = trimmed(entry.substr(equals + 1));
    const Field* field = nullptr;
    for (const Field& f : fields())
      if (f.name == name) field = &f;
    INPUT_CHECK(field != nullptr, "{}: unknown kernel design '{}' (names: {}); the value was '{}'",
                kKernelDesignsVariable, name, field_names(), text);
    for (std::string_view s : seen)
      INPUT_CHECK(s != name, "{}: '{}' given twice in '{}'", kKernelDesignsVariable, name, text);
    seen.push_back(name);
    INPUT_CHECK(field->set(designs, value), "{}: {}={} is not a design ({}: {})", kKernelDesignsVariable, name, value,
                name, field->values);
  }
  return designs;
}

KernelDesigns kernel_designs_from_environment() {
  const char* value = std::getenv(kKernelDesignsVariable);
  return value == nullptr ? KernelDesigns{} : parse_kernel_designs(value);
}

std::string kernel_designs_text(const KernelDesigns& designs) {
  std::string out;
  for (const Field& f : fields()) {
    const std::string_view value = f.get(designs);
    if (value == "auto") continue;
    append_listed(out, ",", f.name);
    out.append("=").append(value);
  }
  return out;
}

}  // namespace gpt2cc::cuda
