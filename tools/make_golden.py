#!/usr/bin/env python3
"""Writes the golden test data of kvstar with Hugging Face transformers and tokenizers.

Runs on a machine with PyTorch, transformers and tokenizers (no network needed):

    python3 tools/make_golden.py --out tests/data

It builds
  - two byte-level BPE tokenizers with the `tokenizers` library: a Qwen2-style one (Qwen2 split
    regex, NFC normalizer, <|endoftext|> and chat specials) and a Llama-3-style one (digits split
    in groups of up to 3, a BOS added by a TemplateProcessing post-processor);
  - two tiny random-weight models saved with save_pretrained: `qwen2_tiny` (Qwen2, GQA, attention
    bias, tied embeddings, bf16 weights, one file) and `llama_tiny` (Llama, GQA, Llama-3 rope
    scaling, no bias, untied embeddings, f16 weights, sharded with an index);
  - golden logits (float32 forward over the stored weights) for several prompts, one of them
    several 128-token blocks long, and the greedy continuation from model.generate;
  - golden token ids for a varied text set, for each tokenizer.

Layout written under --out:
  tokenizer/tokenizer.json, tokenizer/golden_ids.json          (the Qwen2-style tokenizer)
  golden/<model>/config.json, *.safetensors, tokenizer.json, golden_ids.json, golden.json
golden.json: {"prompts": [{"name", "ids", "logits": {"positions": [...], "values": [[...]]},
              "greedy": [...], "greedy_min_margin": float}], "dtype_compute": "float32", ...}
"""

import argparse
import json
import os
import random
import shutil
import sys

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 0 7 42 1234567 3.14159 1,000,000 and 2026-11-22.",
    "Whitespace   runs\tand\t\ttabs\n\nnew lines\r\n  indented\n    code",
    "Punctuation!!! (parens) [brackets] {braces} <angle> \"quotes\" 'single' -- dashes... ;:?",
    "Contractions: I'm, you're, we'll, they've, she'd, it's, CAN'T, WON'T, He'S.",
    "Accents: café, naïve, Ångström, São Paulo, Zürich, crème brûlée.",
    "Decomposed accents: cafe\u0301 and A\u030angstro\u0308m.",
    "CJK: 你好，世界。日本語のテキストです。한국어 문장.",
    "Emoji: 👍🏽 🎉🎉 ❤️ 🚀 — and a family 👨‍👩‍👧.",
    "Special tokens inline: <|endoftext|>after<|im_start|>user\nhi<|im_end|>",
    "Mixed: x=1; y = x*2 # comment\nfor i in range(10): print(i)",
    "   leading spaces and trailing spaces   ",
    "ALL CAPS SENTENCE WITH NUMBERS 99 AND 100.",
    "",
    "a",
    "\n",
    "The passkey is 84729. Remember it. 84729 is the passkey.",
]

WORDS = ("the of and to in is was that for on with as by at from it an be this which or are "
         "have not had but were they his her one all we there been their has more if will would "
         "who so about out up them some what into time could then than only other new these "
         "two may first any like now my such over also most after did made many before must "
         "through back years where much your way well down should because each just those "
         "people how too little state good very make world still own see men work long get "
         "here between both life being under never day same another know while last might us "
         "great old year off come since against go came right used take three key value "
         "passkey needle haystack remember number secret magic city color blue green red "
         "yellow sky grass sun river mountain ocean forest garden window letter music").split()


def make_corpus(seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(4000):
        n = rng.randint(3, 20)
        words = [rng.choice(WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        if rng.random() < 0.2:
            words[0] = words[0].capitalize()
        sep = rng.choice([" ", " ", " ", "  "])
        lines.append(sep.join(words) + rng.choice([".", ",", "!", "?", ":", ""]))
    lines.extend(TEXTS * 20)
    return lines


def build_tokenizer(style, seed):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if style == "llama":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = Tokenizer(models.BPE())
    if style == "qwen2":
        tok.normalizer = normalizers.NFC()
    split = QWEN2_SPLIT if style == "qwen2" else LLAMA3_SPLIT
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000 if style == "qwen2" else 1200, min_frequency=2,
                                  special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(make_corpus(seed), trainer=trainer)
    if style == "llama":
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def golden_ids(tok):
    cases = []
    for text in TEXTS:
        enc = tok.encode(text, add_special_tokens=False)
        enc2 = tok.encode(text, add_special_tokens=True)
        assert tok.decode(enc.ids, skip_special_tokens=False) is not None
        cases.append({"text": text, "ids": enc.ids, "ids_with_special": enc2.ids})
    return {"cases": cases}


def make_model(kind, vocab, eos_id, bos_id, seed):
    import transformers
    torch.manual_seed(seed)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(
            vocab_size=vocab, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
            initializer_range=0.08, eos_token_id=eos_id, bos_token_id=None,
            use_sliding_window=False)
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=64,
            max_position_embeddings=131072, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
            initializer_range=0.06, eos_token_id=eos_id, bos_token_id=bos_id)
        model = transformers.LlamaForCausalLM(cfg)
    # Norm weights away from 1 and non-zero biases, so that a loader that skips them fails.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def run_golden(model_dir, tok, dtype_store, prompts, device):
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.to(device).eval()
    out = []
    for name, text in prompts:
        ids = tok.encode(text, add_special_tokens=True).ids
        x = torch.tensor([ids], device=device)
        with torch.no_grad():
            logits = model(x).logits[0].float().cpu()
        n = len(ids)
        positions = sorted(set([0, n // 3, n // 2, n - 2, n - 1] + list(range(0, n, 97))))
        positions = [p for p in positions if 0 <= p < n]
        with torch.no_grad():
            gen = model.generate(x, max_new_tokens=24, do_sample=False, num_beams=1,
                                 pad_token_id=model.config.eos_token_id)
        greedy = gen[0, n:].tolist()
        # Smallest top-1/top-2 logit gap along the greedy path: how robust the comparison is.
        with torch.no_grad():
            full = model(gen).logits[0, n - 1:-1].float()
        top2 = torch.topk(full, 2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min()) if len(greedy) else 0.0
        out.append({"name": name, "ids": ids,
                    "logits": {"positions": positions,
                               "values": [[round(float(v), 6) for v in logits[p]] for p in positions]},
                    "greedy": greedy, "greedy_min_margin": margin})
        print(f"  {os.path.basename(model_dir)} {name}: {n} tokens, greedy {len(greedy)} tokens, "
              f"min margin {margin:.4f}", flush=True)
    return {"prompts": out, "dtype_compute": "float32", "dtype_stored": dtype_store,
            "transformers": transformers.__version__, "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/data")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = random.Random(args.seed)
    long_text = " ".join(rng.choice(WORDS) for _ in range(700)) + "."
    prompts = [("short", "Hello world"),
               ("medium", "The quick brown fox jumps over the lazy dog. " * 4 + "The passkey is 84729."),
               ("unicode", "café naïve 你好 👍🏽 " + TEXTS[2]),
               ("long", long_text)]

    tok_dir = os.path.join(args.out, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    for kind, dtype in (("qwen2", torch.bfloat16), ("llama", torch.float16)):
        tok = build_tokenizer(kind, args.seed)
        vocab = tok.get_vocab_size()
        eos = tok.token_to_id("<|endoftext|>" if kind == "qwen2" else "<|end_of_text|>")
        bos = tok.token_to_id("<|begin_of_text|>") if kind == "llama" else None
        model = make_model(kind, vocab, eos, bos, args.seed)
        model_dir = os.path.join(args.out, "golden", f"{kind}_tiny")
        shutil.rmtree(model_dir, ignore_errors=True)
        model.to(dtype)
        shard = "300KB" if kind == "llama" else "50MB"
        model.save_pretrained(model_dir, max_shard_size=shard, safe_serialization=True)
        tok.save(os.path.join(model_dir, "tokenizer.json"))
        ids = golden_ids(tok)
        with open(os.path.join(model_dir, "golden_ids.json"), "w") as f:
            json.dump(ids, f, ensure_ascii=False, indent=1)
        if kind == "qwen2":
            tok.save(os.path.join(tok_dir, "tokenizer.json"))
            with open(os.path.join(tok_dir, "golden_ids.json"), "w") as f:
                json.dump(ids, f, ensure_ascii=False, indent=1)
        golden = run_golden(model_dir, tok, str(dtype), prompts, device)
        with open(os.path.join(model_dir, "golden.json"), "w") as f:
            json.dump(golden, f)
        # Drop files the C++ side does not read (generation_config.json is harmless but noisy).
        print(f"{model_dir}: vocab {vocab}, files {sorted(os.listdir(model_dir))}", flush=True)
        with open(os.path.join(model_dir, "config.json")) as f:
            print(f.read(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
