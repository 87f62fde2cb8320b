"""RULER-style synthetic tasks for training the kvstar demo model (Python side).

The C++ suite in src/eval generates the evaluation prompts independently. Both share the task
format (context, question, answer prefix; the model completes with " <answer><|endoftext|>"), but
the wording differs: training draws from the TRAIN templates below, and the C++ suite uses wordings
that appear nowhere in training. The HELDOUT templates here mirror the C++ wordings so that the
Python accuracy check at the end of training measures the same thing as `kvstar eval`.

Only the standard library is needed here, so the generators can be inspected without a GPU:
    python3 tools/tasks.py --dump niah_multikey --length 600
"""

import argparse
import math
import random
import re
import string

TASKS = [
    "niah_single", "niah_single_text", "niah_multikey", "niah_multivalue", "niah_multiquery",
    "vt", "cwe", "fwe", "passkey",
]

NOISE = [
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
    "There and back again.",
]

# ---------------------------------------------------------------------------------------------
# Templates. Index 0 of each TRAIN list is drawn most often; HELDOUT is never used in training.
# ---------------------------------------------------------------------------------------------
NIAH_INTRO = {
    "train": [
        "Some special magic numbers are hidden within the following text. Make sure to memorize "
        "it. I will quiz you about the numbers afterwards.",
        "Read the text below carefully. It contains special magic numbers that you will be asked "
        "about.",
        "The following text hides a few special magic numbers. Keep them in mind.",
        "",
    ],
    "heldout": ["Special magic numbers are hidden in the text that follows. Memorize them, because "
                "questions about them come at the end."],
}
NIAH_NEEDLE = {
    "train": [
        "One of the special magic numbers for {key} is: {value}.",
        "The special magic number for {key} is {value}.",
        "Remember this: the magic number of {key} is {value}.",
        "{key} has the special magic number {value}.",
        "Note that the special magic number assigned to {key} is {value}.",
        "Special magic number for {key}: {value}.",
    ],
    "heldout": ["A special magic number for {key} is: {value}."],
}
NIAH_QUESTION_ONE = {
    "train": [
        "What is the special magic number for {key} mentioned in the provided text?",
        "Which special magic number was given for {key} in the text above?",
        "Find the special magic number for {key} in the text.",
        "Question: what is the magic number of {key}?",
    ],
    "heldout": ["Tell me the special magic number for {key} that appears in the text above."],
}
NIAH_PREFIX_ONE = "The special magic number for {key} mentioned in the provided text is"
NIAH_QUESTION_ALL = {
    "train": [
        "What are all the special magic numbers for {key} mentioned in the provided text?",
        "List every special magic number for {key} in the text above.",
        "Find all the special magic numbers for {key} in the text.",
    ],
    "heldout": ["Which special magic numbers does the text give for {key}? Name all of them."],
}
NIAH_PREFIX_ALL = "The special magic numbers for {key} mentioned in the provided text are"

PASSKEY_INTRO = {
    "train": [
        "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
        "it. I will quiz you about the important information there.",
        "Somewhere in the text below there is a pass key. Find it and remember it.",
        "",
    ],
    "heldout": ["A pass key is hidden in a long stretch of filler text below. Find it and keep "
                "it in mind."],
}
PASSKEY_NEEDLE = {
    "train": [
        "The pass key is {value}. Remember it. {value} is the pass key.",
        "The pass key is {value}. Keep it in mind. The pass key is {value}.",
        "Remember the pass key: {value}. The pass key is {value}.",
    ],
    "heldout": ["Important: the pass key is {value}. Do not forget {value}."],
}
PASSKEY_QUESTION = {
    "train": ["What is the pass key?", "What is the pass key mentioned in the text?",
              "Which pass key was hidden in the text?"],
    "heldout": ["What pass key was given in the text above?"],
}
PASSKEY_PREFIX = "The pass key is"

VT_INTRO = {
    "train": ["Memorize and track the chain(s) of variable assignment hidden in the following "
              "text.",
              "Track the variable assignments hidden in the text below.", ""],
    "heldout": ["The text below hides a chain of variable assignments. Follow it."],
}
VT_QUESTION = {
    "train": ["Question: Find all variables that are assigned the value {value} in the text "
              "above.",
              "Question: Which variables end up holding the value {value}?",
              "Question: Name every variable that gets the value {value}."],
    "heldout": ["Question: List every variable whose value is {value} in the text above."],
}
VT_PREFIX = ("Answer: According to the chain(s) of variables assigned in the text above, {n} "
             "variables are assigned the value {value}, they are:")

CWE_INTRO = {
    "train": ["Below is a numbered list of words. In these words, some appear more often than "
              "others. Memorize the ones that appear most often.",
              "Here is a numbered list of words. Some words are repeated many times.", ""],
    "heldout": ["The numbered list below contains words, and a few of them occur far more often "
                "than the rest."],
}
CWE_QUESTION = {
    "train": ["Question: What are the 10 most common words in the above list?",
              "Question: Which 10 words appear most often in the list?",
              "Question: Name the 10 most frequent words of the list."],
    "heldout": ["Question: Give the 10 words that occur most often in the list above."],
}
CWE_PREFIX = "Answer: The top 10 words that appear most often in the list are:"

FWE_INTRO = {
    "train": ["Read the following coded text and track the frequency of each coded word. Find "
              "the three most frequently appeared coded words.",
              "Count how often each coded word appears in the text below.", ""],
    "heldout": ["Below is a coded text. Keep count of how many times each coded word occurs."],
}
FWE_QUESTION = {
    "train": ["Question: Do not provide any explanation. Please ignore the dots '....'. What are "
              "the three most frequently appeared words in the above coded text?",
              "Question: Which three coded words appear most often in the text above?",
              "Question: Name the three most frequent coded words."],
    "heldout": ["Question: What are the three coded words that occur most often above?"],
}
FWE_PREFIX = "Answer: According to the coded text above, the three most frequently appeared " \
             "words are:"


def pick(rng, variants, split):
    """Training favours variant 0 (40%) and spreads the rest evenly; held-out has one wording."""
    options = variants[split]
    if split == "heldout" or len(options) == 1:
        return options[0]
    if rng.random() < 0.4:
        return options[0]
    return options[rng.randrange(1, len(options))]


def load_verses(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def word_list(verses, min_len=3, max_len=8):
    """Distinct lowercase alphabetic words of the text, sorted (stable across runs)."""
    words = set()
    for v in verses:
        for w in re.findall(r"[A-Za-z]+", v):
            w = w.lower()
            if min_len <= len(w) <= max_len:
                words.add(w)
    return sorted(words)


class TaskGenerator:
    """Builds (prompt, answer) pairs whose prompt has about `prompt_tokens` tokens.

    count(s) -> number of tokens of s. Pieces of the haystack are counted separately and summed,
    which is exact for the byte-level BPE used here as long as each piece starts with its own
    leading space (pre-tokenization never merges across " word" boundaries).
    """

    def __init__(self, verses, count):
        self.verses = verses
        self.count = count
        self.words = word_list(verses)
        self._cache = {}

    def _n(self, s):
        c = self._cache.get(s)
        if c is None:
            c = self.count(s)
            if len(self._cache) < 200000:
                self._cache[s] = c
        return c

    # --- haystacks -------------------------------------------------------------------------
    def _noise(self, budget):
        out, used, i = [], 0, 0
        while True:
            s = " " + NOISE[i % len(NOISE)]
            c = self._n(s)
            if used + c > budget:
                return out
            out.append(s)
            used += c
            i += 1

    def _text(self, rng, budget):
        out, used = [], 0
        i = rng.randrange(len(self.verses))
        while True:
            s = " " + self.verses[i % len(self.verses)]
            c = self._n(s)
            if used + c > budget:
                return out
            out.append(s)
            used += c
            i += 1

    def _key(self, rng):
        return rng.choice(self.words) + "-" + rng.choice(self.words)

    @staticmethod
    def _number(rng, digits):
        return str(rng.randrange(10 ** (digits - 1), 10 ** digits))

    @classmethod
    def _insert(cls, hay, needles_at):
        """needles_at: list of (fraction, sentence). Inserted between haystack sentences."""
        return cls._insert_ordered(hay, needles_at)

    def _assemble(self, intro, pieces, question, prefix):
        head = (intro + "\n") if intro else ""
        return head + "".join(pieces).lstrip(" ") + "\n" + question + " " + prefix

    def _fixed_cost(self, intro, question, prefix, needles):
        return (self._n(intro + "\n") if intro else 0) + self._n("\n" + question) + \
            self._n(" " + prefix) + sum(self._n(" " + s) for s in needles) + 2

    # --- tasks -----------------------------------------------------------------------------
    def niah(self, rng, prompt_tokens, depth, split, kind, haystack):
        intro = pick(rng, NIAH_INTRO, split)
        needle_t = pick(rng, NIAH_NEEDLE, split)
        keys, values = [], []
        if kind == "single":
            keys, values = [self._key(rng)], [self._number(rng, 7)]
            needles = [needle_t.format(key=keys[0], value=values[0])]
            query = [0]
        elif kind == "multikey":
            # Training varies the number of distractors; the held-out form has four needles.
            count = 4 if split == "heldout" else rng.choice([2, 3, 4, 4, 5, 6])
            keys = [self._key(rng) for _ in range(count)]
            values = [self._number(rng, 7) for _ in range(count)]
            needles = [needle_t.format(key=k, value=v) for k, v in zip(keys, values)]
            query = [rng.randrange(count)]
        elif kind == "multivalue":
            k = self._key(rng)
            values = [self._number(rng, 7) for _ in range(4)]
            keys = [k] * 4
            needles = [needle_t.format(key=k, value=v) for v in values]
            query = [0]
        else:  # multiquery
            keys = [self._key(rng) for _ in range(4)]
            values = [self._number(rng, 7) for _ in range(4)]
            needles = [needle_t.format(key=k, value=v) for k, v in zip(keys, values)]
            query = list(range(4))
            rng.shuffle(query)
        if kind in ("single", "multikey"):
            qk = keys[query[0]]
            question = pick(rng, NIAH_QUESTION_ONE, split).format(key=qk)
            prefix = NIAH_PREFIX_ONE.format(key=qk)
            answers = [values[query[0]]]
        elif kind == "multivalue":
            question = pick(rng, NIAH_QUESTION_ALL, split).format(key=keys[0])
            prefix = NIAH_PREFIX_ALL.format(key=keys[0])
            answers = list(values)
        else:
            names = [keys[i] for i in query]
            joined = ", ".join(names[:-1]) + " and " + names[-1]
            question = pick(rng, NIAH_QUESTION_ALL, split).format(key=joined)
            prefix = NIAH_PREFIX_ALL.format(key=joined)
            answers = [values[i] for i in query]
        budget = prompt_tokens - self._fixed_cost(intro, question, prefix, needles)
        hay = self._noise(budget) if haystack == "noise" else self._text(rng, budget)
        if len(needles) == 1:
            placed = [(depth, needles[0])]
        else:
            # The queried (first) needle sits at `depth`; the others at random depths.
            order = list(range(len(needles)))
            placed = [(depth if i == query[0] else rng.random(), needles[i]) for i in order]
            if kind == "multivalue":  # answer in reading order: the order is then learnable
                answers = [values[i] for i in sorted(order, key=lambda i: (placed[i][0], i))]
        prompt = self._assemble(intro, self._insert(hay, placed), question, prefix)
        return prompt, " " + ", ".join(answers), answers

    def passkey(self, rng, prompt_tokens, depth, split):
        intro = pick(rng, PASSKEY_INTRO, split)
        value = self._number(rng, 5)
        needle = pick(rng, PASSKEY_NEEDLE, split).format(value=value)
        question = pick(rng, PASSKEY_QUESTION, split)
        budget = prompt_tokens - self._fixed_cost(intro, question, PASSKEY_PREFIX, [needle])
        hay = self._insert(self._noise(budget), [(depth, needle)])
        return self._assemble(intro, hay, question, PASSKEY_PREFIX), " " + value, [value]

    def vt(self, rng, prompt_tokens, depth, split, hops=4, chains=2):
        intro = pick(rng, VT_INTRO, split)
        used, chain_names, chain_values, statements = set(), [], [], []
        for c in range(chains):
            names = []
            while len(names) < hops + 1:
                n = "".join(rng.choice(string.ascii_uppercase) for _ in range(5))
                if n not in used:
                    used.add(n)
                    names.append(n)
            value = self._number(rng, 5)
            while value in chain_values:
                value = self._number(rng, 5)
            chain_names.append(names)
            chain_values.append(value)
            st = [f"VAR {names[0]} = {value}."] + \
                 [f"VAR {names[i]} = VAR {names[i - 1]}." for i in range(1, hops + 1)]
            statements.append(st)
        question = pick(rng, VT_QUESTION, split).format(value=chain_values[0])
        prefix = VT_PREFIX.format(n=hops + 1, value=chain_values[0])
        flat = [s for st in statements for s in st]
        budget = prompt_tokens - self._fixed_cost(intro, question, prefix, flat)
        hay = self._noise(budget)
        # Chain 0 starts at `depth`; every statement of a chain comes after its predecessor.
        placed = []
        for c, st in enumerate(statements):
            start = depth * 0.5 if c == 0 else rng.random() * 0.5
            fr = sorted(rng.uniform(start, 1.0) for _ in range(len(st) - 1))
            fracs = [start] + fr
            placed += list(zip(fracs, st))
        # _insert inserts from the back, which keeps equal fractions in statement order.
        hay = self._insert_ordered(hay, placed)
        answers = chain_names[0]
        return self._assemble(intro, hay, question, prefix), " " + " ".join(answers), answers

    @staticmethod
    def _insert_ordered(hay, placed):
        slots = {}
        for order, (frac, s) in enumerate(placed):
            slots.setdefault(int(round(frac * len(hay))), []).append((frac, order, s))
        out = []
        for i in range(len(hay) + 1):
            for _, _, s in sorted(slots.get(i, [])):
                out.append(" " + s)
            if i < len(hay):
                out.append(hay[i])
        return out

    def cwe(self, rng, prompt_tokens, split, num_common=10):
        intro = pick(rng, CWE_INTRO, split)
        question = pick(rng, CWE_QUESTION, split)
        fixed = self._fixed_cost(intro, question, CWE_PREFIX, [])
        budget = prompt_tokens - fixed
        # About 4 tokens per line "123. word"; choose frequencies that fit the budget.
        lines = max(40, budget // 5)
        freq_common = max(3, min(30, lines // (num_common * 3)))
        freq_rare = 1 if freq_common < 6 else 3 if freq_common >= 12 else 2
        vocab = rng.sample(self.words, min(len(self.words), 4000))
        common, rare_pool = vocab[:num_common], vocab[num_common:]
        items = [w for w in common for _ in range(freq_common)]
        body_cost = sum(self._n(f"\n{i + 1}. {w}") for i, w in enumerate(items))
        rare_i = 0
        while rare_i < len(rare_pool):
            w = rare_pool[rare_i]
            add = sum(self._n(f"\n{len(items) + j + 1}. {w}") for j in range(freq_rare))
            if body_cost + add > budget:
                break
            items += [w] * freq_rare
            body_cost += add
            rare_i += 1
        rng.shuffle(items)
        body = "".join(f"\n{i + 1}. {w}" for i, w in enumerate(items))
        head = (intro) if intro else ""
        prompt = head + body + "\n" + question + " " + CWE_PREFIX
        firsts = []
        for w in items:
            if w in common and w not in firsts:
                firsts.append(w)
        return prompt, " " + " ".join(firsts), firsts

    def fwe(self, rng, prompt_tokens, split, alpha=2.0, vocab_size=400):
        intro = pick(rng, FWE_INTRO, split)
        question = pick(rng, FWE_QUESTION, split)
        budget = prompt_tokens - self._fixed_cost(intro, question, FWE_PREFIX, [])
        vocab = set()
        while len(vocab) < vocab_size:
            vocab.add("".join(rng.choice(string.ascii_lowercase)
                              for _ in range(rng.randrange(3, 6))))
        vocab = sorted(vocab)
        rng.shuffle(vocab)
        weights = [1.0 / (r + 1) ** alpha for r in range(vocab_size)]
        words, used = [], 0
        while True:
            w = rng.choices(vocab, weights)[0]
            piece = " " + w + (" ...." if rng.random() < 0.1 else "")
            c = self._n(piece)
            if used + c > budget:
                break
            words.append(piece)
            used += c
        counts = {}
        for p in words:
            w = p.split()[0]
            counts[w] = counts.get(w, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], vocab.index(kv[0])))[:3]
        answers = [w for w, _ in top]
        head = (intro + "\n") if intro else ""
        prompt = head + "".join(words).lstrip(" ") + "\n" + question + " " + FWE_PREFIX
        return prompt, " " + " ".join(answers), answers

    def lm(self, rng, tokens):
        return "".join(self._text(rng, tokens)).lstrip(" ")

    def make(self, task, rng, prompt_tokens, depth, split="train"):
        """Returns (prompt, target, answers). target is what the model must emit before EOS."""
        if task == "niah_single":
            return self.niah(rng, prompt_tokens, depth, split, "single", "noise")
        if task == "niah_single_text":
            return self.niah(rng, prompt_tokens, depth, split, "single", "text")
        if task == "niah_multikey":
            return self.niah(rng, prompt_tokens, depth, split, "multikey", "text")
        if task == "niah_multivalue":
            return self.niah(rng, prompt_tokens, depth, split, "multivalue", "text")
        if task == "niah_multiquery":
            return self.niah(rng, prompt_tokens, depth, split, "multiquery", "text")
        if task == "passkey":
            return self.passkey(rng, prompt_tokens, depth, split)
        if task == "vt":
            return self.vt(rng, prompt_tokens, depth, split)
        if task == "cwe":
            return self.cwe(rng, prompt_tokens, split)
        if task == "fwe":
            return self.fwe(rng, prompt_tokens, split)
        raise ValueError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")


MAX_NEW_TOKENS = {"niah_single": 24, "niah_single_text": 24, "niah_multikey": 24,
                  "niah_multivalue": 64, "niah_multiquery": 64, "passkey": 16, "vt": 48,
                  "cwe": 96, "fwe": 32}


def string_match_all(output, answers):
    return sum(1.0 for a in answers if a.lower() in output.lower()) / len(answers)


def passkey_match(output, answers):
    nums = re.findall(r"\d+", output)
    return 1.0 if nums and nums[0] == answers[0] else 0.0


def score(task, output, answers):
    return passkey_match(output, answers) if task == "passkey" else \
        string_match_all(output, answers)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", default="data/kjv_ot.txt")
    ap.add_argument("--dump", default="niah_single", help="task to print")
    ap.add_argument("--length", type=int, default=400, help="prompt length (whitespace words)")
    ap.add_argument("--split", default="train", choices=["train", "heldout"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gen = TaskGenerator(load_verses(args.text), lambda s: len(s.split()) or 1)
    prompt, target, answers = gen.make(args.dump, random.Random(args.seed), args.length, 0.5,
                                       args.split)
    print(prompt + target)
    print("--- answers:", answers, "words:", len(prompt.split()))


if __name__ == "__main__":
    main()
