#!/usr/bin/env python3
"""Rewrites one kernels/*.cu file into host C++ that g++ compiles against the CPU emulator.

Only the launch syntax changes: `name<<<grid, block[, smem[, stream]]>>>(args)` becomes
`::gpt2cc::hostcuda::kernel_call(::gpt2cc_hostcuda_dynamic_shared(), name, grid, block[, smem[, stream]])(args)`,
newlines kept, so `#line` maps every line back to the .cu file. A kernel template launched
without template arguments (CUDA deduces them from the arguments) is passed as a generic lambda
that calls it instead (kernel_call_deduced), since its address needs the deduction first. The output starts with the
emulation prelude and ends with the definition of the TU's dynamic shared memory: each
`extern __shared__ Type name[]` of the .cu file and of the kernels/ headers it includes becomes a
GPT2CC_EMU_DYNAMIC_SHARED array in the namespace of the declaration (a TU may have at most one:
kernel_call registers it, by a function returning the calling OS thread's instance, as the
launch's shared window).

    translate.py <input.cu> <output.cpp> <source root>
"""
import os
import re
import sys

LAUNCH = re.compile(r"<<<(.*?)>>>", re.DOTALL)
IDENT_CHARS = re.compile(r"[A-Za-z0-9_:]")
EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w:\s]*?)\s*([A-Za-z_]\w*)\s*\[\s*\]")
INCLUDE = re.compile(r'^\s*#\s*include\s+"(kernels/[^"]+)"', re.MULTILINE)


def launched_name_start(text, end):
    """Index where the kernel expression that ends just before text[end] starts: identifiers,
    `::` and balanced template argument lists, e.g. `ns::kernel<Elem, kPack<Elem>>`."""
    i = end
    while True:
        while i > 0 and text[i - 1].isspace():
            i -= 1
        if i > 0 and text[i - 1] == ">":
            depth = 0
            while i > 0:
                i -= 1
                if text[i] == ">":
                    depth += 1
                elif text[i] == "<":
                    depth -= 1
                    if depth == 0:
                        break
            if depth != 0:
                raise SystemExit("translate.py: unbalanced template arguments before a launch")
            continue
        start = i
        while i > 0 and IDENT_CHARS.match(text[i - 1]):
            i -= 1
        if i == start:
            raise SystemExit("translate.py: no kernel name before `<<<` at offset %d" % end)
        return i


TEMPLATE_KERNEL = re.compile(
    r"template\s*<(?:[^<>]|<[^<>]*>)*>\s*__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")


def template_kernels(text):
    return set(TEMPLATE_KERNEL.findall(strip_comments_and_literals(text)))


def rewrite_launches(text, deduced):
    out, pos = [], 0
    for match in LAUNCH.finditer(text):
        start = launched_name_start(text, match.start())
        name = text[start:match.start()].strip()
        out.append(text[pos:start])
        if name.split("::")[-1] in deduced:
            out.append("::gpt2cc::hostcuda::kernel_call_deduced(::gpt2cc_hostcuda_dynamic_shared(), "
                       "[](const auto&... gpt2cc_args) { %s(gpt2cc_args...); }, " % name)
        else:
            out.append("::gpt2cc::hostcuda::kernel_call(::gpt2cc_hostcuda_dynamic_shared(), ")
            out.append(text[start:match.start()])
            out.append(", ")
        out.append(match.group(1))
        out.append(")")
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def strip_comments_and_literals(text):
    """The same text with comments and string/char literals blanked (newlines kept)."""
    pattern = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.DOTALL)
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def extern_shared_arrays(text):
    """(namespace list, type, name) of each `extern __shared__ T name[]`, with the namespaces
    open where it appears (anonymous ones as '')."""
    code = strip_comments_and_literals(text)
    token = re.compile(r"namespace\s*([\w:]*)\s*\{|\{|\}|extern\s+__shared__")
    stack, found = [], []
    for m in token.finditer(code):
        if m.group(0).startswith("namespace"):
            stack.append(("ns", m.group(1)))
        elif m.group(0) == "{":
            stack.append(("block", None))
        elif m.group(0) == "}":
            if not stack:
                raise SystemExit("translate.py: unbalanced braces")
            stack.pop()
        else:
            decl = EXTERN_SHARED.match(code, m.start())
            if not decl:
                raise SystemExit("translate.py: cannot read the extern __shared__ declaration at offset %d" % m.start())
            namespaces = [name for kind, name in stack if kind == "ns"]
            found.append((namespaces, " ".join(decl.group(1).split()), decl.group(2)))
    return found


def included_kernel_headers(text, root):
    return [os.path.join(root, path) for path in INCLUDE.findall(text)
            if os.path.exists(os.path.join(root, path))]


def dynamic_shared_definition(arrays):
    if not arrays:
        return ("[[maybe_unused]] static ::gpt2cc::hostcuda::DynamicShared gpt2cc_hostcuda_dynamic_shared() { return {}; }\n")
    unique = {(tuple(ns), type_, name) for ns, type_, name in arrays}
    if len(unique) > 1:
        raise SystemExit("translate.py: more than one dynamic shared array in one TU: %s" %
                         ", ".join("::".join(list(ns) + [name]) for ns, _, name in sorted(unique)))
    ns, type_, name = unique.pop()
    opening = "".join("namespace %s{ " % (n + " " if n else "") for n in ns)
    closing = "}" * len(ns)
    qualified = "::".join([n for n in ns if n] + [name])
    return ("%sGPT2CC_EMU_DYNAMIC_SHARED(%s, %s); %s\n"
            "[[maybe_unused]] static ::gpt2cc::hostcuda::DynamicShared gpt2cc_hostcuda_dynamic_shared() {\n"
            "  return {[]() -> void* { return ::%s; }, sizeof(::%s)};\n"
            "}\n" % (opening, type_, name, closing, qualified, qualified))


def main():
    source, output, root = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(source) as f:
        text = f.read()
    arrays = extern_shared_arrays(text)
    deduced = template_kernels(text)
    for header in included_kernel_headers(text, root):
        with open(header) as f:
            header_text = f.read()
        arrays += extern_shared_arrays(header_text)
        deduced |= template_kernels(header_text)
    result = ("// Generated by tests/emu/hostcuda/translate.py from %s: do not edit.\n"
              '#include "emu/hostcuda/prelude.hpp"\n'
              '#line 1 "%s"\n%s\n#line 1 "%s (emulation epilogue)"\n%s'
              % (source, source, rewrite_launches(text, deduced), os.path.basename(output), dynamic_shared_definition(arrays)))
    os.makedirs(os.path.dirname(output), exist_ok=True)
    previous = None
    if os.path.exists(output):
        with open(output) as f:
            previous = f.read()
    if previous != result:
        with open(output, "w") as f:
            f.write(result)


if __name__ == "__main__":
    main()
