#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_gpt2.json: a varied corpus and tiktoken's GPT-2 ids for it.

tiktoken's `gpt2` Encoding is rebuilt from the local GPT-2 files (../shared/data/gpt2/encoder.json
+ vocab.bpe) with tiktoken's own pattern string, so nothing is downloaded. Each case is
{"name", "text", "ids"}; test_tokenizer.cpp compares every id and the round trip.
  python3 tests/make_tokenizer_fixture.py [--data ../shared/data] [--out tests/fixtures/tokenizer_gpt2.json]
"""
import argparse
import json
import os
import sys

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str


def gpt2_encoding(gpt2_dir):
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=os.path.join(gpt2_dir, "vocab.bpe"),
        encoder_json_file=os.path.join(gpt2_dir, "encoder.json"))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def excerpt(path, start, length):
    """`length` characters of a UTF-8 file from character `start`, cut at line boundaries."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    a = text.rfind("\n", 0, start) + 1
    b = text.find("\n", a + length)
    return text[a:b + 1 if b >= 0 else len(text)]


HAND_WRITTEN = {
    "prose": "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst "
             "of times; it was the age of wisdom... \"Quoted,\" she said -- and (parenthesised) [bracketed] "
             "{braced} text! Is it? Yes: it is.\n",
    "contractions": "it's IT'S we're WE'RE they've THEY'VE I'm I'M we'll WE'LL he'd HE'D don't DON'T "
                    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D ''s '''t x's y'all o'clock rock'n'roll "
                    "Tom's dog's 'quoted' ’s curly’s\n",
    "numbers_dates": "1 12 123 1234 12345 123456789012345678901234567890 3.14159 -42 +7 1e10 0x1F 0b1010 "
                     "1,000,000 2024-01-15 15/01/2024 01.15.2024 12:30:45 3rd 21st 100% $19.99 €5 £3 ¥100 "
                     "Ⅻ ½ ² ٣ ४ 五 ①\n",
    "source_code": "#include <vector>\nint main(int argc, char** argv) {\n    std::vector<int> v{1, 2, 3};\n"
                   "    for (auto& x : v) x *= 2;  // double\n\treturn v.size() > 2 ? 0 : 1;\n}\n\n"
                   "def f(x: int) -> str:\n    '''Docstring.'''\n    if x >= 0 and x != 3:\n        return f\"{x!r}\"\n"
                   "    return None\n\nconst y = (a) => a?.b ?? c;  /* JS */\nSELECT * FROM t WHERE id = 'x';\n"
                   "<div class=\"a\">&amp; &lt;</div>\n$ ls -la | grep foo && echo $?\n",
    "whitespace_runs": "a  b   c    d     e\t\tf\t \tg \t h\n\n\nlines\n\n\n\n\nmore   \ntrailing    \n"
                       "\r\nwindows\r\nline\r\n\r\n  leading spaces\n" + " " * 40 + "x" + "\t" * 20 + "y\n"
                       + "\n" * 30 + "end   ",
    "unicode_whitespace": "nbsp\u00a0here ideographic\u3000space en\u2002em\u2003thin\u2009 nel\u0085next "
                          "vt\x0bff\x0cfs\x1cgs\x1dline\u2028para\u2029 ogham\u1680mark narrow\u202fmath\u205f"
                          " mongolian\u180evowel zwsp\u200bzwj\u200d \u3000\u3000x \u00a0 y",
    "chinese": "我们的目标是构建一个完全从零开始的语言模型。北京是中华人民共和国的首都，人口超过两千万。",
    "japanese": "日本語のテキストです。ひらがな、カタカナ、漢字を含みます。東京タワーは333メートル。ｶﾀｶﾅ",
    "arabic": "اللغة العربية هي لغة سامية. مرحبا بالعالم! الأرقام: ١٢٣٤٥",
    "devanagari": "हिन्दी भारत की राजभाषा है। नमस्ते दुनिया। संस्कृत में श्लोक।",
    "cyrillic": "Москва — столица России. Привет, мир! Ёжик в тумане. ЪЫЬ.",
    "korean": "한국어는 한글로 씁니다. 안녕하세요, 세계! 서울특별시.",
    "greek_hebrew_thai": "Ελληνικά κείμενα. שלום עולם. สวัสดีชาวโลก ภาษาไทย",
    "emoji": "I ❤️ emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 🇺🇸🇯🇵🇩🇪 flags, 🧑🏿‍🚀 astronaut, "
             "1️⃣ keycap, ©️ ™ ☺ 🫠",
    "combining_marks": "cafe\u0301 re\u0301sume\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0364\u0300\u0353a\u0332l\u0336go "
                       "\u0301leading combining, \u0915\u094d\u0937 e\u0301\u0301\u0301\u0301 Å Å ﬁ ﬀ",
    "specials_as_text": "before <|endoftext|> after<|endoftext|><|endoftext|>end <|endoftext| |endoftext|>",
    "mixed_scripts": "English中文Русскийالعربية日本語한국어 mixed123abc abc123 αβγ123 test_case snake_case CamelCase",
    "long_pieces": "a" * 300 + " " + "ab" * 200 + " " + "9" * 257 + " " + "!" * 300 + " " * 3000 + "z"
                   + " supercalifragilisticexpialidocious" * 3 + "\n" * 500 + "\u00e9" * 150,
    "edge_single": "a",
    "edge_space": " ",
    "edge_newline": "\n",
    "edge_empty": "",
    "punctuation": "!!! ??? ... --- *** ### @@@ ~~ `` ^^ || \\\\ // ;; :: ,, \"\" '' () [] {} <> «» „“ ‘’ — – • … ¿¡",
    "urls_emails": "https://example.com/path?query=1&x=y#frag user@example.org www.test.co.uk/a_b-c.html",
    # Letters and digits assigned in Unicode 15 and 16 (CJK Extension I, Kawi, Cyrillic and Latin
    # additions, Nag Mundari and Kirat Rai digits, outlined digits): PCRE2 before 10.45 has Unicode
    # 14's tables and took them for punctuation (scripts/deps.sh, ensure_pcre2).
    "unicode_15_16": "\U0002EBF0's \U0002EBF1\U0002EBF2x \U00011F04\U00011F05 \U00011F50\U00011F51 "
                     "\u1C89\u1C8A's \uA7CB\uA7CC\uA7CD \U0001E030\U0001E031 \U0001E4F0\U0001E4F1 "
                     "\U00016D70\U00016D71 \U0001CCF0\U0001CCF1 \U00013460\U00013461 \U00031350's\n",
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(here, "fixtures", "tokenizer_gpt2.json"))
    args = ap.parse_args()
    enc = gpt2_encoding(os.path.join(args.data, "gpt2"))

    cases = dict(HAND_WRITTEN)
    d = args.data
    cases["tinystories_train"] = excerpt(os.path.join(d, "tinystories", "train-head.txt"), 0, 30000)
    cases["tinystories_valid"] = excerpt(os.path.join(d, "tinystories", "valid-head.txt"), 200000, 12000)
    cases["tinystories_v2"] = excerpt(os.path.join(d, "tinystories", "v2-sample.txt"), 0, 4000)
    cases["wikitext2_raw"] = excerpt(os.path.join(d, "wikitext2", "wiki.test.raw"), 0, 30000)
    cases["wikitext103_tokens"] = excerpt(os.path.join(d, "wikitext103", "wiki.valid.tokens"), 100000, 15000)
    for i in (0, 17, 42, 59):
        cases[f"wikipedia_{i:02d}"] = excerpt(os.path.join(d, "wikipedia", f"wiki_{i:02d}"), 300000, 25000)
    cases["shakespeare"] = excerpt(os.path.join(d, "tinyshakespeare", "input.txt"), 50000, 8000)

    out = []
    for name, text in cases.items():
        ids = enc.encode(text, allowed_special="all")
        plain = enc.encode(text, disallowed_special=())  # special-token text encoded as plain text
        assert enc.decode_bytes(ids) == text.encode("utf-8"), name
        case = {"name": name, "text": text, "ids": ids}
        if plain != ids:
            case["ids_no_special"] = plain
        out.append(case)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"generator": "tests/make_tokenizer_fixture.py", "tiktoken": tiktoken.__version__,
                   "encoding": "gpt2", "cases": out}, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, args.out)
    total_ids = sum(len(c["ids"]) for c in out)
    print(f"wrote {args.out}: {len(out)} cases, {total_ids} ids, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    sys.exit(main())
