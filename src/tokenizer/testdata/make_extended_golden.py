#!/usr/bin/env python3
"""Writes extended_golden_<name>.json: ids from the Hugging Face `tokenizers` library on texts
chosen to exercise the corners of the pipeline (Unicode whitespace and digits, case folding,
normalization, added tokens), seeded random text and natural text. Tokenizers: the tiny ones under
tests/data, and two trained here on data/kjv_ot.txt (scripts/make_haystack.sh) with the Qwen2 and
Llama-3 pipelines (<name>_tokenizer.json). Run where `tokenizers` is installed:

    python3 src/tokenizer/testdata/make_extended_golden.py OUT_DIR [VOCAB_SIZE]
"""
import json
import random
import sys

import tokenizers

SOURCES = {
    "qwen2_tiny": "tests/data/golden/qwen2_tiny/tokenizer.json",
    "llama_tiny": "tests/data/golden/llama_tiny/tokenizer.json",
}

HAND_PICKED = [
    "\u0085", "a\u0085b", " \u0085 x", "\u180e", "a\u180e b", "\u180e\u180e", "\u200b x",
    "\u00a0", "a\u00a0b", "x \u00a0 y", "\u3000\u3000z", "\u2028\u2029", "\u202f\u205f",
    "\ufeffBOM", "\x0b\x0c", "a\x0bb", "\x1c\x1d\x1e\x1f", "a\x1cb",
    "\r\n\r\n", " \n ", "\n\n\n", "x\r\ny", "  \n  x", "\t\t\tx", " " * 40 + "x", "x" + " " * 33,
    "'s 'S 't 'T 're 'RE 'Re 've 'VE 'm 'M 'll 'LL 'lL 'd 'D",
    "'\u017f", "it'\u017f", "'\u212a", "x'sy", "''s", "'", "'''", "' s",
    "\u0661\u0662\u0663\u0664\u0665", "\u0be7\u0be8", "\u00bd\u00b2\u00b3", "\u216b\u2160",
    "12345678901234567890", "1 22 333 4444 55555", "\uff11\uff12\uff13",
    "a\u0301\u0302", "e\u0301e\u0301e\u0301", "\u1100\u1161\u11a8", "A\u030a", "\u212b",
    "\u0041\u0308\u0304", "\ufb01 \ufb02", "\u2126", "\u1e9b\u0323",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F1EB\U0001F1F7", "\u2764\ufe0f",
    "\U000E0041", "\U0010FFFD", "\U0001D400\U0001D401",
    "<|endoftext|>", "<|endoftext|><|endoftext|>", " <|endoftext|> ", "a<|endoftext|>b",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n",
    "<|im_end", "<|im_end|", "|im_end|>", "<<|im_end|>>", "<|begin_of_text|>x<|eot_id|>",
    "<|end_of_text|> <|eot_id|>\n", "<|begin_of_text|><|begin_of_text|>",
    "def f(x):\n    return x ** 2  # square\n", "if (a &&b) || !c { return; }",
    "http://example.com/path?q=1&r=2#frag", "email@example.org", "C:\\Windows\\path",
    "$$$ %%% ^^^ ***", "...", "!?", "—–-", "«guillemets» „quotes“", "¿Qué? ¡Sí!",
    "Ünïcödé ÀÉÎÕÜ ßẞ", "İstanbul ı", "ǅ ǈ ǋ", "ΣΑΣ σας", "Привет, мир!", "שלום עולם",
    "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "こんにちは世界", "안녕하세요 세계",
    "你好，世界！", "混合English和中文", "tab\tseparated\tvalues\n1\t2\t3",
]

RANGES = [(0x20, 0x7E), (0x20, 0x7E), (0x20, 0x7E), (0x09, 0x0D), (0x80, 0x24F), (0x300, 0x36F),
          (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
          (0x1100, 0x11FF), (0x1680, 0x180F), (0x2000, 0x206F), (0x2070, 0x218F),
          (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFB00, 0xFB4F),
          (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x10FFFF)]


def random_text(rng, specials):
    out = []
    for _ in range(rng.randrange(0, 60)):
        r = rng.random()
        if r < 0.03 and specials:
            out.append(rng.choice(specials))
        elif r < 0.15:
            out.append(rng.choice([" ", " ", "\n", "\t", "'", "'s", "0", "12", "\r\n"]))
        else:
            lo, hi = rng.choice(RANGES)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                c = 0x41
            out.append(chr(c))
    return "".join(out)


QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = QWEN2_PATTERN.replace(r"\p{N}|", r"\p{N}{1,3}|")


def train(out_dir, vocab_size):
    """Byte-level BPE on the KJV Old Testament; returns {name: path}."""
    from tokenizers import Regex, models, normalizers, pre_tokenizers, decoders, processors, trainers
    paths = {}
    for name, pattern, nfc, llama in (("kjv_qwen2", QWEN2_PATTERN, True, False),
                                      ("kjv_llama3", LLAMA3_PATTERN, False, True)):
        tok = tokenizers.Tokenizer(models.BPE())
        if nfc:
            tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        specials = (["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"] if llama else
                    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train(["data/kjv_ot.txt"], trainer)
        if llama:
            bos = specials[0]
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                special_tokens=[(bos, tok.token_to_id(bos))])
        # Llama-3 sets ignore_merges; set it through the JSON (older bindings lack the argument).
        spec = json.loads(tok.to_str())
        spec["model"]["ignore_merges"] = llama
        if llama:  # the pair form of merges, as newer tokenizers write it
            spec["model"]["merges"] = [m.split(" ") if isinstance(m, str) else m
                                       for m in spec["model"]["merges"]]
        else:
            spec["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                       for m in spec["model"]["merges"]]
        path = f"{out_dir}/{name}_tokenizer.json"
        with open(path, "w") as f:
            json.dump(spec, f, ensure_ascii=False)
        paths[name] = path
    return paths


def main():
    out_dir = sys.argv[1]
    vocab_size = int(sys.argv[2]) if len(sys.argv) > 2 else 8000
    sources = dict(SOURCES)
    sources.update(train(out_dir, vocab_size))
    with open("src/eval/data/kjv_nt.txt") as f:
        natural = [line.rstrip("\n") for line in f][::120]
    for name, path in sources.items():
        tok = tokenizers.Tokenizer.from_file(path)
        specials = [t.content for t in tok.get_added_tokens_decoder().values()]
        rng = random.Random(20261122)
        texts = (HAND_PICKED + [random_text(rng, specials) for _ in range(400)] + natural +
                 ["\n".join(natural[:50])])
        cases = []
        for text in texts:
            ids = tok.encode(text, add_special_tokens=False).ids
            case = {"text": text, "ids": ids}
            # Compact: the other fields only where they say something.
            with_special = tok.encode(text, add_special_tokens=True).ids
            if with_special != ids and len(cases) < len(HAND_PICKED):
                case["ids_with_special"] = with_special
            decoded = tok.decode(ids, skip_special_tokens=False)
            if decoded != text:
                case["decoded"] = decoded
            cases.append(case)
        meta = {"tokenizers_version": tokenizers.__version__, "tokenizer": name,
                "format": "ids_with_special only where it differs from ids (hand-picked texts); "
                          "decoded only where it differs from text"}
        with open(f"{out_dir}/extended_golden_{name}.json", "w") as f:
            json.dump({"meta": meta, "cases": cases}, f, ensure_ascii=False,
                      separators=(",", ":"))
        print(name, len(cases), "cases")


if __name__ == "__main__":
    main()
