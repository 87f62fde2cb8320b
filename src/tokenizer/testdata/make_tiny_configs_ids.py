#!/usr/bin/env python3
"""Writes tiny_configs_ids.json: what the tokenizers library makes of tiny_configs.json, a list of
small hand-built tokenizer.json documents (the builders of tokenizer_test_util.cc: byte vocabulary, a
few merges, added tokens with strip / single_word / normalized flags, NFC, GPT-2 ByteLevel, Split
behaviors) with the texts to encode. Run where `tokenizers` is installed:

    python3 src/tokenizer/testdata/make_tiny_configs_ids.py src/tokenizer/testdata
"""
import json, sys, tokenizers
cfgs = json.load(open("src/tokenizer/testdata/tiny_configs.json"))
res = []
for c in cfgs:
    try:
        tok = tokenizers.Tokenizer.from_str(json.dumps(c["config"]))
    except Exception as e:
        res.append({"name": c["name"], "error": str(e)}); continue
    res.append({"name": c["name"], "cases": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids,
               "ids_with_special": tok.encode(t, add_special_tokens=True).ids,
               "decoded": tok.decode(tok.encode(t, add_special_tokens=False).ids,
                                        skip_special_tokens=True)} for t in c["texts"]]})
json.dump(res, open(sys.argv[1] + "/tiny_configs_ids.json", "w"))
print("ok", len(res))
