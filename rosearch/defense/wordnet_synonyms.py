"""WordNet synonyms exactly as PWWS draws them (TextAttack's ``WordSwapWordNet``): the lemma names
of every synset of the word, single words only. nltk must already see a WordNet
(``rosearch.attack.resources.prepare_textattack`` provisions one from Debian's files)."""

from __future__ import annotations

from collections.abc import Iterable


def wordnet_relations(words: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """word -> its WordNet synonyms (lower-cased, sorted), for the words that have any."""
    from nltk.corpus import wordnet  # lazy: heavy third-party import, only when synonym encoding is built

    try:
        wordnet.ensure_loaded()
    except LookupError as err:
        raise FileNotFoundError(
            "synonym encoding needs WordNet and nltk finds none (fix: `apt-get install wordnet-base "
            "wordnet-sense-index` or set attack.wordnet_dir; rosearch provisions nltk's layout itself)"
        ) from err
    out: dict[str, tuple[str, ...]] = {}
    for word in words:
        synonyms = {
            lemma.lower() for synset in wordnet.synsets(word) for lemma in synset.lemma_names()
            if lemma.isalpha() and lemma.lower() != word
        }
        if synonyms:
            out[word] = tuple(sorted(synonyms))
    return out
