#!/usr/bin/env python3
"""Generate tokenizer test vectors for the Java BertTokenizer from the Python `tokenizers` library.

    python tools/make_vectors.py OUT_DIR [--model-dir DIR]

Writes into OUT_DIR (a temp/build folder; nothing here is committed):
  full.tsv          varied corpus through the model's own tokenizer.json (truncation 128)
  sweep.tsv         every Unicode code point (32 per line, space separated) through the same tokenizer
  trim5000.tsv      the corpus through a BertWordPieceTokenizer built from the first 5,000 vocab entries
  sparse.tsv        the corpus through one built from a sparse vocab (first 1,000 + every 7th entry)
  vocab_trim5000.txt, vocab_sparse.txt
Each .tsv starts with a header line "#tokenizer_json PATH" or "#vocab_txt PATH", then one vector a
line: name TAB base64(utf-8 text) TAB space-separated ids (with [CLS]/[SEP]).
The model folder defaults to probscale_edge.assets.fetch('all-MiniLM-L6-v2') (honours PROBSCALE_EDGE_CACHE).
"""
from __future__ import annotations

import argparse
import base64
import random
import sys
import unicodedata
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

MAX_LEN = 128

HANDCRAFTED = [
    "", " ", "   ", "\t\n\r", "\u3000\u00a0\u2003", "\u200b", "\u200b\u200c\u200d\ufeff", "\x00\x01\x02", "\x7f\x85\x9f",
    "a", "A", "Hello, world!", "HELLO WORLD", "hello   world", " leading and trailing ",
    "The quick brown fox jumps over the lazy dog.", "I can't believe it's not butter!",
    "don't won't shouldn't y'all o'clock", "e-mail, re-entry, state-of-the-art", "well... okay?!?! no!!!",
    "café", "CAFÉ", "naïve résumé coöperate", "Ångström", "Crème brûlée à la mode", "São Paulo", "Zürich Straße",
    "ﬁnance ﬂoor", "Ǆemal ǅ ǆ", "İstanbul ılık", "ΣΊΣΥΦΟΣ σίσυφος ΌΣΟΣ", "Ελληνικά κείμενα", "Москва — столица России",
    "ЁЖИК ёжик", "Україна їжак ґанок", "Příliš žluťoučký kůň úpěl ďábelské ódy", "Zażółć gęślą jaźń", "Tiếng Việt có dấu",
    "Þórður Ægir Øre", "ŁÓDŹ", "ÆØÅ æøå", "ĳsselmeer ŉ", "\u0041\u030a vs \u00c5", "e\u0301 e\u0300 e\u0302 n\u0303",
    "a\u0308\u0301\u0323", "\u0301leading combining", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "中文分词测试", "我爱北京天安门。", "日本語のテキストです", "ひらがな カタカナ ｶﾀｶﾅ",
    "한국어 텍스트 입니다", "混合mixed文本text", "𠀀𠀁 𪜀 𫝀 𫠠 𬺰 丽", "㐀㐁 䶵", "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３！", "①②③ ⅰⅱⅲ Ⅻ",
    "العربية نص تجريبي", "مَرْحَبًا بِالْعَالَم", "עברית טקסט", "שָׁלוֹם", "हिन्दी पाठ", "ক্ষ বাংলা", "தமிழ் உரை", "ภาษาไทย ข้อความ",
    "ລາວ", "ქართული", "Հայերեն", "አማርኛ", "ᐃᓄᒃᑎᑐᑦ", "ᚠᚢᚦᚨᚱᚲ", "𝐁𝐨𝐥𝐝 𝕯𝖔𝖚𝖇𝖑𝖊", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "😀", "😀😃😄", "I love it 😍😍😍!!!", "👍🏽 👩‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸", "🤣🥰🥱🥲🫠🫶", "❤️ ♥ ☺ ✓ ✔ ★ ☆", "(╯°□°)╯︵ ┻━┻", "¯\\_(ツ)_/¯",
    "0", "123", "3.14159", "1,000,000", "-42", "+1 (555) 123-4567", "2024-01-31T12:34:56Z", "$19.99 €5 £3 ¥100 ₹50 ₿",
    "50% off!!!", "1st 2nd 3rd 4th", "0x1F600", "1e-10", "٠١٢٣٤٥٦٧٨٩", "१२३", "½ ¾ ⅓",
    "https://www.example.com/path?query=1&x=y#frag", "http://localhost:8080/", "user@example.com", "ftp://a.b/c.d",
    "www.google.com", "#hashtag @mention", "C:\\Windows\\System32", "/usr/local/bin", "snake_case camelCase kebab-case",
    "!!!", "???", "...", "!?!?!?", "---", "***", "~~~", "'''", '"""', "(((())))", "[[[]]]", "{{{}}}", "<<<>>>",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", "«guillemets» „quotes“ “smart” ‘single’", "— – ‐ ‑ ‒ ―", "¡Hola! ¿Qué tal?",
    "a.b,c;d:e!f?g", "x++ y-- z**", "§¶†‡•…‰′″", "©®™℠", "°C °F µm Ω", "→←↑↓⇒", "∀x∈ℝ: x²≥0", "∑∏∫√∞≠≈",
    "[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "hello [MASK] world", "[CLS] explicit [SEP] tokens", "[mask] lower",
    "[MASK][MASK]", "x[SEP]y", "[ MASK ]", "[unused0]", "##ing", "un##able", "##",
    "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious",
    "a" * 99, "a" * 100, "a" * 101, "a" * 150, "é" * 101, "ab" * 60, "x" + "\u0301" * 120,
    "word " * 200, "truncate me " * 100, "中" * 300, "😀 " * 200, "a, " * 100, ("The movie was great. " * 40).strip(),
    "tab\tseparated\tvalues", "line1\nline2\r\nline3", "form\x0cfeed vertical\x0btab", "nul\x00byte", "bell\x07char",
    "soft\u00adhyphen", "rtl\u200fmark ltr\u200emark", "zero\u2060joiner", "bom\ufeffinside", "replacement\ufffdchar",
    "private\ue000use\uf8ff", "tag\U000e0041chars", "var\ufe0fsel", "noncharacter\ufdd0 \uffff", "unassigned\u0378\U0003fffd",
    "mongolian\u180evowel", "ogham\u1680space", "line\u2028sep para\u2029sep", "nbsp\u202fnarrow", "math\u205fspace",
]

POOLS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "digits": "0123456789",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "space": " \t\n\r\u00a0\u2003\u3000\u2028\x0b\x0c\x85",
    "latin1": "".join(chr(c) for c in range(0xC0, 0x100)),
    "latinx": "".join(chr(c) for c in range(0x100, 0x250)),
    "combining": "".join(chr(c) for c in range(0x300, 0x370)),
    "greek": "".join(chr(c) for c in range(0x370, 0x400) if unicodedata.category(chr(c)) != "Cn"),
    "cyrillic": "".join(chr(c) for c in range(0x400, 0x530)),
    "hebrew_arabic": "".join(chr(c) for c in range(0x590, 0x700)),
    "indic": "".join(chr(c) for c in range(0x900, 0xE80)),
    "cjk": "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400)) + "的一是不了人我在有他这为之大来以个中上们",
    "cjk_ext": "".join(chr(c) for c in [0x3400, 0x3401, 0x4DB5, 0x20000, 0x2A700, 0x2B740, 0x2B820, 0x2B920, 0x2CEA0, 0xF900, 0x2F800]),
    "kana_hangul": "".join(chr(c) for c in range(0x3040, 0x3100)) + "".join(chr(c) for c in range(0xAC00, 0xAC00 + 300)),
    "fullwidth": "".join(chr(c) for c in range(0xFF01, 0xFF5F)),
    "symbols": "".join(chr(c) for c in range(0x2000, 0x2BFF)),
    "emoji": "".join(chr(c) for c in list(range(0x1F300, 0x1F650)) + list(range(0x1F900, 0x1FA00)) + list(range(0x1FA70, 0x1FB00))),
    "emoji_mod": "\u200d\ufe0f\U0001F3FB\U0001F3FD\U0001F3FF\U0001F1EF\U0001F1F5",
    "control": "".join(chr(c) for c in list(range(0, 32)) + list(range(0x7F, 0xA0))) + "\u200b\u200e\u200f\u2060\ufeff\u00ad\u061c",
    "private": "\ue000\ue123\uf8ff\U000f0000\U00100000",
    "unassigned": "\u0378\u0379\u0380\u05ff\U0003fffd\U000e0080\ufdd0\uffff",
    "math_alnum": "".join(chr(c) for c in range(0x1D400, 0x1D500)),
    "misc_scripts": "".join(chr(c) for c in range(0x10A0, 0x1400)),
}
POOL_NAMES = sorted(POOLS)


def random_text(rng: random.Random, vocab_words: list[str]) -> str:
    kind = rng.random()
    pools = rng.sample(POOL_NAMES, rng.randint(1, 4))
    parts = []
    for _ in range(rng.randint(1, 40)):
        r = rng.random()
        if r < 0.35:
            w = rng.choice(vocab_words)
            if rng.random() < 0.3:
                w = w.capitalize() if rng.random() < 0.5 else w.upper()
            if rng.random() < 0.2:
                w = "".join(ch + (rng.choice(POOLS["combining"]) if rng.random() < 0.3 else "") for ch in w)
            parts.append(w)
        elif r < 0.85:
            pool = POOLS[rng.choice(pools)]
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
        else:
            parts.append(rng.choice(POOLS["punct"]) * rng.randint(1, 5))
        if rng.random() < 0.8:
            parts.append(rng.choice(" " * 10 + "\t\n" + "\u3000\u00a0") if kind < 0.9 else "")
    return "".join(parts)


def corpus(vocab_words: list[str], n_random: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = [(f"hand{k}", t) for k, t in enumerate(HANDCRAFTED)]
    # vocabulary words in sentences, with case and accent variations
    for k in range(400):
        words = [rng.choice(vocab_words) for _ in range(rng.randint(1, 25))]
        s = " ".join(words)
        if k % 3 == 0:
            s = s.title()
        if k % 5 == 0:
            s = unicodedata.normalize("NFD", s.replace("e", "é").replace("a", "à"))
        out.append((f"words{k}", s + rng.choice([".", "!", "?", "", " :)", "..."])))
    # random mixed-script strings
    for k in range(n_random):
        out.append((f"rand{k}", random_text(rng, vocab_words)))
    # very long inputs (truncation at 128)
    for k in range(60):
        out.append((f"long{k}", " ".join(random_text(rng, vocab_words) for _ in range(rng.randint(8, 40)))))
    # numbers and URLs
    for k in range(150):
        if k % 2:
            out.append((f"num{k}", f"{rng.randint(-10**9, 10**9):,} {rng.random() * 1000:.3f} {rng.randint(0, 99)}% #{rng.randint(0, 9999)}"))
        else:
            host = ".".join(rng.choice(vocab_words) for _ in range(rng.randint(1, 3)))
            out.append((f"url{k}", f"https://{host}.com/{rng.choice(vocab_words)}?id={rng.randint(0, 10**6)}&q={rng.choice(vocab_words)}#x"))
    return out


def sweep() -> list[tuple[str, str]]:
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    out = []
    for k in range(0, len(cps), 32):
        chunk = cps[k:k + 32]
        out.append((f"cp{chunk[0]:x}", " ".join(chr(c) for c in chunk)))
    return out


def write(path: Path, header: str, tok: Tokenizer, items) -> int:
    encs = tok.encode_batch([t for _, t in items])
    with path.open("w", encoding="utf-8") as f:
        f.write(header + "\n")
        for (name, text), e in zip(items, encs):
            assert all(m == 1 for m in e.attention_mask) and all(t == 0 for t in e.type_ids)
            b64 = base64.b64encode(text.encode("utf-8")).decode("ascii")
            f.write(f"{name}\t{b64}\t{' '.join(map(str, e.ids))}\n")
    return len(items)


def prepared(tok: Tokenizer) -> Tokenizer:
    tok.no_padding()
    tok.enable_truncation(MAX_LEN)
    return tok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--random", type=int, default=1500, help="number of random mixed-script strings")
    a = ap.parse_args()
    if a.model_dir:
        model_dir = Path(a.model_dir)
    else:
        from probscale_edge.assets import fetch
        model_dir = Path(fetch("all-MiniLM-L6-v2"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tj = model_dir / "tokenizer.json"
    vocab = [l.rstrip("\n") for l in (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")]
    if vocab and vocab[-1] == "":
        vocab.pop()
    words = [w for w in vocab if w.isalpha() and not w.startswith("[") and len(w) > 1]
    items = corpus(words, a.random, seed=1234)
    counts = {}
    counts["full"] = write(out / "full.tsv", f"#tokenizer_json {tj}", prepared(Tokenizer.from_file(str(tj))), items)
    counts["sweep"] = write(out / "sweep.tsv", f"#tokenizer_json {tj}", prepared(Tokenizer.from_file(str(tj))), sweep())
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trims = {
        "trim5000": vocab[:5000] + [s for s in specials if s not in vocab[:5000]],
        "sparse": vocab[:1000] + [w for k, w in enumerate(vocab) if k >= 1000 and k % 7 == 0],
    }
    for name, v in trims.items():
        vp = out / f"vocab_{name}.txt"
        vp.write_text("\n".join(v) + "\n", encoding="utf-8")
        tok = BertWordPieceTokenizer(str(vp), lowercase=True)
        counts[name] = write(out / f"{name}.tsv", f"#vocab_txt {vp}", prepared(tok._tokenizer), items)
    for k, v in counts.items():
        print(f"VECTORS {k} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
