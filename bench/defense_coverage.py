"""Attack surface left by each input defense: how many of the words an attacker may change still
have a replacement in the attack's own candidate set that the defense does not map back.

A text-level defense (word recognition, synonym encoding) can only stop a swap that it undoes: the
defended text of the swapped sentence must equal the defended original. For every word of the SST-2
dev sentences that the attacks may touch (not one of TextAttack's stopwords, which DeepWordBug, PWWS
and Pruthi leave alone), this counts whether *some* candidate of each family crosses the defense:

* ``one-letter edits`` — every adjacent swap, deletion, insertion and substitution of a lower-case
  letter (DeepWordBug's four edits, enumerated);
* ``real-word edits`` — those of them that are words of the lexicon (what ``deepwordbug-adaptive``
  searches: word recognition keeps them, typo encoding is built to absorb them);
* ``WordNet synonyms`` — PWWS's candidates (the lemma names of every synset);
* ``counter-fitted neighbours`` — TextFooler's candidates (the ``attack.neighbors_path`` table).

A word with no crossing candidate cannot be attacked through that family at all, whatever the model;
a sentence none of whose words can be is certified against single-family swaps. The table is what
says how far a defense alone can go before the student itself must be robust (``ascc``, adversarial
training). No model is queried: it runs in a minute or two on one core. Run from the repository root::

    .venv/bin/python bench/defense_coverage.py [--json bench/results/defense_coverage.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/common.py

from common import console, print_table, write_figures  # noqa: E402

from rosearch.attack.resources import load_neighbors, prepare_textattack  # noqa: E402
from rosearch.config import load_config  # noqa: E402
from rosearch.data.tasks import load_examples, task_spec  # noqa: E402
from rosearch.defense import Defense  # noqa: E402
from rosearch.defense.wordnet_synonyms import wordnet_relations  # noqa: E402
from rosearch.defense.words import words  # noqa: E402
from rosearch.prepare.defense import build_defense_resources  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# typo encoding is built over synonym representatives when a run also carries synonym encoding (as here)
DEFENSE_SETS = ((), ("word_recognition",), ("synonym_encoding",), ("word_recognition", "synonym_encoding"),
                ("word_recognition", "synonym_encoding", "typo_encoding"))


def one_letter_edits(word: str) -> set[str]:
    """Every string one DeepWordBug edit away from ``word`` (``word`` itself excluded)."""
    edits = {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(len(word) - 1)}
    edits |= {word[:i] + word[i + 1:] for i in range(len(word))} if len(word) > 1 else set()
    edits |= {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in LETTERS}
    edits |= {word[:i] + c + word[i + 1:] for i in range(len(word)) for c in LETTERS}
    edits.discard(word)
    return edits


def crosses(apply: Callable[[str], str], word: str, candidates: Iterable[str]) -> bool:
    """Whether some candidate's defended form differs from the defended word."""
    target = apply(word)
    return any(apply(c) != target for c in candidates)


def surface(sentences: list[list[str]], apply: Callable[[str], str],
            family: Callable[[str], Iterable[str]]) -> dict[str, float]:
    """Share of attackable words (with candidates) that have a crossing one, and of sentences with none."""
    memo: dict[str, bool] = {}
    words_with = crossing = certified = 0
    for sentence in sentences:
        open_words = 0
        for word in sentence:
            candidates = list(family(word))
            if not candidates:
                continue
            words_with += 1
            if word not in memo:
                memo[word] = crosses(apply, word, candidates)
            open_words += memo[word]
        crossing += open_words
        certified += open_words == 0
    return {"words_with_candidates": words_with, "crossing_share": crossing / max(1, words_with),
            "sentences_without_a_crossing_word": certified / max(1, len(sentences))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("configs/bench_robustness.yaml"),
                        help="data, defense and attack settings (the benchmark's, so the lexicon is the students')")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    config = load_config(args.config, ["search_space.defense_choices=[word_recognition, typo_encoding, synonym_encoding]"])
    out = console()
    start = time.perf_counter()
    prepare_textattack(config.attack, config.run.cache_dir)
    from textattack.constraints.pre_transformation import StopwordModification  # lazy: needs nltk provisioned

    stopwords = StopwordModification().stopwords  # DeepWordBug's and PWWS's
    lexicon = [t for e in load_examples(task_spec(config.data), "train", config.data.data_dir) for t in (e.text_a, e.text_b) if t]
    resources = build_defense_resources(config, lexicon)
    dev = [[w for w in words(e.text_a) if w not in stopwords]
           for e in load_examples(task_spec(config.data), "dev", config.data.data_dir)]
    vocab = sorted({w for s in dev for w in s})
    wordnet = wordnet_relations(vocab)
    neighbors = load_neighbors(config.attack.neighbors_path)
    lexicon_words = frozenset(resources.counts)
    families = {"one-letter edits": one_letter_edits,
                "real-word edits": lambda w: one_letter_edits(w) & lexicon_words,
                "WordNet synonyms": lambda w: wordnet.get(w, ()),
                "counter-fitted neighbours": lambda w: neighbors.get(w, ())}
    figures: dict = {"sentences": len(dev), "lexicon_words": len(resources.counts), "rows": {}}
    rows = []
    for names in DEFENSE_SETS:
        apply = Defense(names, resources).apply if names else (lambda w: w)
        label = "+".join(names) or "none"
        figures["rows"][label] = {family: surface(dev, apply, fn) for family, fn in families.items()}
        rows.append([label] + [f"{100 * figures['rows'][label][f]['crossing_share']:.1f} % / "
                               f"{100 * figures['rows'][label][f]['sentences_without_a_crossing_word']:.1f} %"
                               for f in families])
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print_table(out, "attack surface: attackable words with a crossing candidate / dev sentences with none",
                ["defense", *families], rows,
                caption=f"SST-2 dev, {len(dev)} sentences, TextAttack stopwords excluded; {figures['seconds']} s")
    write_figures(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
