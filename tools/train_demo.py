"""Trains the kvstar demo long-context model (Qwen2ForCausalLM, ~25M parameters) on one GPU.

Steps: (1) train a byte-level BPE tokenizer on the training text plus synthetic task text,
(2) train the model on a mixture of sequence lengths (256 to 16K tokens, constant tokens per step)
with RULER-style tasks from tools/tasks.py and plain text, answer tokens weighted up, (3) save bf16
safetensors shards + tokenizer in Hugging Face layout, (4) reload the saved model and measure greedy
accuracy on held-out wordings and held-out haystack text at several lengths.

Run on a GPU machine (see tools/README.md):
    PYTHONUNBUFFERED=1 python3 tools/train_demo.py --out /tmp/kvstar-demo --minutes 8
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tasks  # noqa: E402

EOS = "<|endoftext|>"
# Qwen2's pre-tokenizer regex: digits split one by one, letters grouped with one leading char.
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Training mixture: task -> weight. "lm" is plain text from the training haystack.
MIX = {"niah_single": 0.12, "niah_single_text": 0.10, "niah_multikey": 0.16,
       "niah_multivalue": 0.12, "niah_multiquery": 0.12, "passkey": 0.08, "vt": 0.10,
       "cwe": 0.06, "fwe": 0.06, "lm": 0.08}


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------------
def train_tokenizer(verses, vocab_size, seed, out_dir):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(seed)
    approx = tasks.TaskGenerator(verses, lambda s: max(1, len(s) // 4))
    corpus = list(verses)
    # Synthetic task text (training wordings only) so that template words become single tokens.
    for i in range(3000):
        task = tasks.TASKS[i % len(tasks.TASKS)]
        p, t, _ = approx.make(task, rng, rng.choice([100, 200, 400]), rng.random(), "train")
        corpus.append(p + t)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                      model_max_length=32768)
    wrapped.save_pretrained(out_dir)
    return tok


# ------------------------------------------------------------------------------------------------
# Data: an IterableDataset of whole batches [B, L], B = tokens_per_step // L, L drawn per batch.
# Batch k depends only on (seed, k), so the stream is the same for any number of workers.
# ------------------------------------------------------------------------------------------------
class TaskBatches(torch.utils.data.IterableDataset):
    def __init__(self, tok_json, verses, counts, args):
        self.tok_json, self.verses, self.counts, self.args = tok_json, verses, counts, args
        self.lengths = [int(x) for x in args.lengths.split(",")]
        self.lweights = [float(x) for x in args.length_weights.split(",")]
        assert len(self.lengths) == len(self.lweights), "--lengths and --length-weights differ"

    def _setup(self):
        from tokenizers import Tokenizer
        self.tok = Tokenizer.from_str(self.tok_json)
        self.eos = self.tok.token_to_id(EOS)
        self.gen = tasks.TaskGenerator(self.verses, self._count)
        self.gen._cache.update(self.counts)

    def _count(self, s):
        return len(self.tok.encode(s, add_special_tokens=False).ids)

    def _enc(self, s):
        return self.tok.encode(s, add_special_tokens=False).ids

    def row(self, rng, L):
        """One training sequence of L + 1 tokens and its L per-target weights."""
        a = self.args
        task = rng.choices(list(MIX), list(MIX.values()))[0]
        if task == "lm":
            ids = self._enc(self.gen.lm(rng, L + 8))[:L + 1]
            w = [1.0] * (len(ids) - 1)
        else:
            budget = L - tasks.MAX_NEW_TOKENS[task] // 2 - 4
            for _ in range(4):
                prompt, target, _ = self.gen.make(task, rng, budget, rng.random(), "train")
                p, t = self._enc(prompt), self._enc(target) + [self.eos]
                if len(p) + len(t) <= L + 1:
                    break
                budget -= len(p) + len(t) - (L + 1) + 8
            else:
                p = p[len(p) + len(t) - (L + 1):]  # rare: cut the oldest context
            ids = p + t
            # Target i predicts ids[i + 1]; the answer starts at target index len(p) - 1.
            w = [a.context_weight] * (len(p) - 1) + [a.answer_weight] * len(t)
        pad = L + 1 - len(ids)
        ids = ids + [self.eos] * pad
        w = w + [0.0] * (L - len(w))
        return ids, w

    def batch(self, k):
        rng = random.Random(self.args.seed * 1000003 + k)
        L = rng.choices(self.lengths, self.lweights)[0]
        B = max(1, self.args.tokens_per_step // L)
        rows = [self.row(rng, L) for _ in range(B)]
        ids = torch.tensor([r[0] for r in rows], dtype=torch.int64)
        w = torch.tensor([r[1] for r in rows], dtype=torch.float32)
        return ids, w

    def __iter__(self):
        self._setup()
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        k = self.args.start_batch + wid
        while True:
            yield self.batch(k)
            k += nw


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
def build_model(args, vocab_size, eos_id):
    from transformers import Qwen2Config, Qwen2ForCausalLM
    kw = dict(vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
              num_hidden_layers=args.layers, num_attention_heads=args.heads,
              num_key_value_heads=args.kv_heads, max_position_embeddings=32768,
              rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=eos_id,
              eos_token_id=eos_id, pad_token_id=eos_id, use_sliding_window=False,
              hidden_act="silu", initializer_range=0.02, attention_dropout=0.0)
    try:
        cfg = Qwen2Config(rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
                          **kw)
    except TypeError:
        cfg = Qwen2Config(rope_theta=args.rope_theta, **kw)
    theta = getattr(cfg, "rope_theta", None) or (getattr(cfg, "rope_parameters", None) or {}).get(
        "rope_theta")
    assert theta == args.rope_theta, f"rope_theta not applied: {cfg}"
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg)
    return model, cfg


def save_model(model, tok_dir, out_dir, rope_theta):
    model = model.to(torch.bfloat16)
    model.save_pretrained(out_dir, max_shard_size="15MB", safe_serialization=True)
    # Plain Qwen2 configs carry rope_theta at the top level; keep it there for every reader.
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.setdefault("rope_theta", rope_theta)
    cfg["torch_dtype"] = "bfloat16"
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    # transformers 5 writes its own class name; PreTrainedTokenizerFast loads in 4.x and 5.x.
    tc_path = os.path.join(tok_dir, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        src = os.path.join(tok_dir, name)
        if os.path.exists(src) and os.path.abspath(tok_dir) != os.path.abspath(out_dir):
            with open(src, "rb") as fi, open(os.path.join(out_dir, name), "wb") as fo:
                fo.write(fi.read())


# ------------------------------------------------------------------------------------------------
# Evaluation of the saved model (held-out wordings, held-out haystack text)
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model_dir, eval_verses, args):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    eos = tok.convert_tokens_to_ids(EOS)
    gen = tasks.TaskGenerator(eval_verses,
                              lambda s: len(tok(s, add_special_tokens=False).input_ids))
    lengths = [int(x) for x in args.eval_lengths.split(",")]
    n = args.eval_samples
    results, records = {}, []
    tok.padding_side = "left"
    for task in tasks.TASKS:
        results[task] = {}
        for L in lengths:
            rng = random.Random(f"{args.seed}-{task}-{L}")
            mnt = tasks.MAX_NEW_TOKENS[task]
            items = [gen.make(task, rng, L - mnt, i / max(1, n - 1), "heldout") for i in range(n)]
            t0 = time.time()
            scores = []
            per = max(1, 65536 // L)  # bounds the padded-attention memory at 16K
            for b0 in range(0, n, per):
                chunk = items[b0:b0 + per]
                enc = tok([it[0] for it in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False).to("cuda")
                out = model.generate(**enc, max_new_tokens=mnt, do_sample=False,
                                     eos_token_id=eos, pad_token_id=eos)
                new = out[:, enc.input_ids.shape[1]:]
                for j, it in enumerate(chunk):
                    i = b0 + j
                    text = tok.decode(new[j], skip_special_tokens=True)
                    s = tasks.score(task, text, it[2])
                    scores.append(s)
                    records.append({"task": task, "length": L, "depth": i / max(1, n - 1),
                                    "prompt_tokens": int(enc.attention_mask[j].sum()),
                                    "expected": it[2], "output": text, "score": s})
            results[task][L] = sum(scores) / len(scores)
            log(f"eval {task:17s} L={L:6d} acc={results[task][L]:.2f} "
                f"({time.time() - t0:.1f}s) e.g. {records[-1]['output'][:60]!r} "
                f"want {records[-1]['expected']}")
    head = "task".ljust(18) + "".join(f"{L:>8d}" for L in lengths)
    lines = [head] + [t.ljust(18) + "".join(f"{100 * results[t][L]:7.0f}%" for L in lengths)
                      for t in tasks.TASKS]
    print("\n".join(lines), flush=True)
    return {"lengths": lengths, "samples_per_cell": n, "accuracy": results, "table": lines,
            "records": records}


# ------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default="data/kjv_ot.txt", help="training text, one verse a line")
    ap.add_argument("--eval-text", default="src/eval/data/kjv_nt.txt",
                    help="held-out haystack text for the accuracy check")
    ap.add_argument("--out", required=True, help="output model directory (HF layout)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: time)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--intermediate", type=int, default=1408)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--rope-theta", type=float, default=1e6)
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192,16384")
    ap.add_argument("--length-weights", default="0.06,0.06,0.10,0.16,0.24,0.24,0.14")
    ap.add_argument("--tokens-per-step", type=int, default=65536)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--answer-weight", type=float, default=8.0)
    ap.add_argument("--context-weight", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-lengths", default="1024,4096,8192,16384")
    ap.add_argument("--eval-samples", type=int, default=8)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--schedule-minutes", type=float, default=0,
                    help="length of the learning-rate schedule (default: --minutes); set it to the "
                         "sum of the --minutes of chained runs when training is split with --ckpt")
    ap.add_argument("--ckpt", default="",
                    help="checkpoint file (fp32 weights + optimizer): resumed from if it exists, "
                         "written at the end. Lets a run longer than one job be split in parts")
    ap.add_argument("--skip-eval", action="store_true", help="skip the accuracy check")
    ap.add_argument("--init-from", default="",
                    help="start from the weights and tokenizer of this model directory (HF layout)")
    ap.add_argument("--mix", default="",
                    help="override task weights of the training mixture, e.g. niah_multikey=0.3")
    args = ap.parse_args()

    t_start = time.time()
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    verses = tasks.load_verses(args.text)
    eval_verses = tasks.load_verses(args.eval_text)
    log(f"text: {len(verses)} training verses, {len(eval_verses)} held-out verses")

    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=False) \
        if args.ckpt and os.path.exists(args.ckpt) else None
    for item in filter(None, args.mix.split(",")):
        name, weight = item.split("=")
        assert name in MIX, f"--mix: unknown task {name}; valid: {', '.join(MIX)}"
        MIX[name] = float(weight)
    log(f"mixture: {MIX}")
    if ckpt is None and args.init_from:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(os.path.join(args.init_from, "tokenizer.json"))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(args.init_from, name), "rb") as fi, \
                    open(os.path.join(args.out, name), "wb") as fo:
                fo.write(fi.read())
        log(f"initialising from {args.init_from}")
    elif ckpt is not None:
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast
        tok = Tokenizer.from_str(ckpt["tokenizer"])
        PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                model_max_length=32768).save_pretrained(args.out)
        log(f"resuming from {args.ckpt}: step {ckpt['step']}, {ckpt['elapsed']:.0f}s trained")
    else:
        tok = train_tokenizer(verses, args.vocab, args.seed, args.out)
    eos_id = tok.token_to_id(EOS)
    vocab_size = tok.get_vocab_size()
    log(f"tokenizer: vocab {vocab_size}, eos id {eos_id} ({time.time() - t_start:.1f}s)")
    keys = [" " + v for v in verses] + [" " + s for s in tasks.NOISE]
    counts = {k: len(e.ids) for k, e in zip(keys, tok.encode_batch(keys,
                                                                   add_special_tokens=False))}
    tot = sum(counts[" " + v] for v in verses)
    log(f"training text: {tot} tokens, {sum(len(v) + 1 for v in verses) / tot:.2f} chars/token")

    args.start_batch = ckpt["step"] if ckpt else 0
    # Fork the data workers before CUDA is initialised.
    ds = TaskBatches(tok.to_str(), verses, counts, args)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4, persistent_workers=True,
                                         pin_memory=True)
    it = iter(loader)

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    model, cfg = build_model(args, vocab_size, eos_id)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"model: {nparams / 1e6:.2f}M parameters, {cfg.num_hidden_layers} layers, hidden "
        f"{cfg.hidden_size}, heads {cfg.num_attention_heads}/{cfg.num_key_value_heads}")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif args.init_from:
        from transformers import Qwen2ForCausalLM
        src = Qwen2ForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        missing = model.load_state_dict(src.state_dict(), strict=False)
        log(f"loaded weights from {args.init_from} ({missing})")
        del src
    model.cuda().train()
    fwd = torch.compile(model, dynamic=True) if args.compile else model
    decay = [p for n_, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    if ckpt is not None:
        opt.load_state_dict(ckpt["opt"])
    budget_s = args.minutes * 60.0
    sched_s = (args.schedule_minutes or args.minutes) * 60.0
    offset_s = ckpt["elapsed"] if ckpt else 0.0

    def lr_at(step, elapsed):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (offset_s + elapsed) / sched_s
        if args.max_steps:
            p = max(p, step / args.max_steps)
        p = min(1.0, p)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 *
                          (1 + math.cos(math.pi * p)))

    history, per_len = (ckpt["history"], {}) if ckpt else ([], {})
    t0 = time.time()
    tokens_done, step = (ckpt["tokens"], ckpt["step"]) if ckpt else (0, 0)
    step0, tokens0 = step, tokens_done
    win_tokens, win_t = 0, time.time()
    log("training")
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget_s or (args.max_steps and step >= args.max_steps):
            break
        ids, w = next(it)
        ids = ids.cuda(non_blocking=True)
        w = w.cuda(non_blocking=True)
        x, y = ids[:, :-1], ids[:, 1:]
        lr = lr_at(step, elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = fwd(input_ids=x, use_cache=False).logits
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="none").view_as(w)
        loss = (nll * w).sum() / w.sum().clamp_min(1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        L = x.shape[1]
        tokens_done += x.numel()
        win_tokens += x.numel()
        if step % args.log_every == 0 or step <= 3:
            with torch.no_grad():
                amask = w == args.answer_weight
                ans_loss = (nll * amask).sum() / amask.sum().clamp_min(1)
                ans_acc = ((logits.argmax(-1) == y) & amask).sum() / amask.sum().clamp_min(1)
            torch.cuda.synchronize()
            now = time.time()
            tps = win_tokens / (now - win_t)
            win_tokens, win_t = 0, now
            rec = {"step": step, "L": L, "loss": round(loss.item(), 4),
                   "answer_loss": round(ans_loss.item(), 4),
                   "answer_token_acc": round(ans_acc.item(), 4), "lr": lr,
                   "grad_norm": round(gnorm.item(), 3), "tokens": tokens_done,
                   "tokens_per_s": round(tps), "elapsed_s": round(offset_s + now - t0, 1)}
            history.append(rec)
            per_len.setdefault(L, []).append(rec["answer_token_acc"])
            log(f"step {step:5d} L={L:5d} loss {rec['loss']:.3f} ans_loss {rec['answer_loss']:.3f}"
                f" ans_acc {rec['answer_token_acc']:.3f} lr {lr:.2e} gnorm {rec['grad_norm']:.2f}"
                f" {tps / 1e3:.0f}k tok/s mem {torch.cuda.max_memory_allocated() / 2**30:.1f}G"
                f" elapsed {now - t0:.0f}s")
    train_s = time.time() - t0
    log(f"trained {step - step0} steps, {(tokens_done - tokens0) / 1e6:.1f}M tokens in "
        f"{train_s:.0f}s ({(tokens_done - tokens0) / train_s / 1e3:.0f}k tok/s); total {step} "
        f"steps, {tokens_done / 1e6:.1f}M tokens, {offset_s + train_s:.0f}s")
    del it, loader
    if args.ckpt:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "elapsed": offset_s + train_s, "tokens": tokens_done, "history": history,
                    "tokenizer": tok.to_str()}, args.ckpt)
        log(f"checkpoint written to {args.ckpt}")
    train_s += offset_s

    save_model(model, args.out, args.out, args.rope_theta)
    sizes = {f: os.path.getsize(os.path.join(args.out, f)) for f in sorted(os.listdir(args.out))}
    log(f"saved {args.out}: {sizes}")
    del model, opt
    torch.cuda.empty_cache()

    result = {"args": vars(args), "parameters": nparams, "steps": step, "tokens": tokens_done,
              "train_seconds": round(train_s, 1), "history": history,
              "answer_token_acc_by_length_last": {L: v[-3:] for L, v in sorted(per_len.items())}}
    with open(os.path.join(args.out, "train_history.json"), "w") as f:
        json.dump(result, f, indent=1)
    if args.skip_eval:
        log(f"done in {time.time() - t_start:.0f}s (accuracy check skipped)")
        return
    ev = evaluate(args.out, eval_verses, args)
    with open(os.path.join(args.out, "eval_python.json"), "w") as f:
        json.dump(ev, f, indent=1)
    log(f"done in {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
