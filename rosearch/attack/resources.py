"""Offline resources for TextAttack: NLTK data, WordNet and the synonym-neighbour table.

TextAttack reads NLTK's English stopwords at import time and PWWS reads WordNet through nltk;
neither may be downloaded on an offline machine. rosearch therefore writes an NLTK data
directory itself — the stopword list is a constant here, WordNet comes from Debian's
``wordnet-base`` + ``wordnet-sense-index`` files (nltk will not read ``/usr/share/wordnet`` in
place, and Debian lacks the ``lexnames`` file, which is also a constant here) — and points nltk
at it before ``import textattack``. A resource that cannot be found raises
:class:`MissingResourceError` naming the resource, the setting to change and the install
command, never a download attempt deep inside an attack.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import types
from pathlib import Path
from typing import Mapping

from rosearch.files.cache import atomic_dir, write_text_atomically
from rosearch.config import AttackConfig
from rosearch.errors import UserError
from rosearch.runtime.logs import quiet_known_messages, route_nltk_downloads

logger = logging.getLogger(__name__)

WORDNET_ENV = "ROSEARCH_WORDNET_DIR"
DEFAULT_WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_INSTALL = "sudo apt-get install wordnet-base wordnet-sense-index"
NEIGHBORS_EXAMPLE = "../shared/data/embeddings/counterfitted_neighbors.json.gz"

# Files nltk's WordNetCorpusReader opens (besides `lexnames`, written from LEXNAMES below).
WORDNET_FILES: tuple[str, ...] = (
    "index.sense",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("adj", "adv", "noun", "verb")),
    *(f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")),
)
WORDNET_OPTIONAL_FILES: tuple[str, ...] = ("cntlist.rev",)  # only lemma counts need it

# The 45 WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic category.
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3), ("adj.pert", 3), ("adv.all", 4), ("noun.Tops", 1), ("noun.act", 1),
    ("noun.animal", 1), ("noun.artifact", 1), ("noun.attribute", 1), ("noun.body", 1),
    ("noun.cognition", 1), ("noun.communication", 1), ("noun.event", 1), ("noun.feeling", 1),
    ("noun.food", 1), ("noun.group", 1), ("noun.location", 1), ("noun.motive", 1), ("noun.object", 1),
    ("noun.person", 1), ("noun.phenomenon", 1), ("noun.plant", 1), ("noun.possession", 1),
    ("noun.process", 1), ("noun.quantity", 1), ("noun.relation", 1), ("noun.shape", 1),
    ("noun.state", 1), ("noun.substance", 1), ("noun.time", 1), ("verb.body", 2), ("verb.change", 2),
    ("verb.cognition", 2), ("verb.communication", 2), ("verb.competition", 2), ("verb.consumption", 2),
    ("verb.contact", 2), ("verb.creation", 2), ("verb.emotion", 2), ("verb.motion", 2),
    ("verb.perception", 2), ("verb.possession", 2), ("verb.social", 2), ("verb.stative", 2),
    ("verb.weather", 2), ("adj.ppl", 3),
)

# NLTK's English stopword list (nltk_data `corpora/stopwords/english`, 198 words), which
# TextAttack's default StopwordModification uses.
NLTK_ENGLISH_STOPWORDS: tuple[str, ...] = (
    "a", "about", "above", "after", "again", "against", "ain", "all", "am", "an", "and", "any", "are",
    "aren", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both",
    "but", "by", "can", "couldn", "couldn't", "d", "did", "didn", "didn't", "do", "does", "doesn",
    "doesn't", "doing", "don", "don't", "down", "during", "each", "few", "for", "from", "further", "had",
    "hadn", "hadn't", "has", "hasn", "hasn't", "have", "haven", "haven't", "having", "he", "he'd",
    "he'll", "her", "here", "hers", "herself", "he's", "him", "himself", "his", "how", "i", "i'd", "if",
    "i'll", "i'm", "in", "into", "is", "isn", "isn't", "it", "it'd", "it'll", "it's", "its", "itself",
    "i've", "just", "ll", "m", "ma", "me", "mightn", "mightn't", "more", "most", "mustn", "mustn't", "my",
    "myself", "needn", "needn't", "no", "nor", "not", "now", "o", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "ourselves", "out", "over", "own", "re", "s", "same", "shan", "shan't", "she",
    "she'd", "she'll", "she's", "should", "shouldn", "shouldn't", "should've", "so", "some", "such", "t",
    "than", "that", "that'll", "the", "their", "theirs", "them", "themselves", "then", "there", "these",
    "they", "they'd", "they'll", "they're", "they've", "this", "those", "through", "to", "too", "under",
    "until", "up", "ve", "very", "was", "wasn", "wasn't", "we", "we'd", "we'll", "we're", "were", "weren",
    "weren't", "we've", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with",
    "won", "won't", "wouldn", "wouldn't", "y", "you", "you'd", "you'll", "your", "you're", "yours",
    "yourself", "yourselves", "you've",
)


class MissingResourceError(UserError, RuntimeError):
    """A resource an attack needs (WordNet, the neighbour table, a download) is unavailable;
    the message names it, the setting that points to it and how to install it."""


# --------------------------------------------------------------------------------------------
# WordNet
# --------------------------------------------------------------------------------------------


def _is_wordnet_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in WORDNET_FILES)


def _wordnet_source(explicit: str | None) -> tuple[Path, str]:
    """The directory to look at and where it came from (for messages)."""
    if explicit:
        return Path(explicit).expanduser(), "attack.wordnet_dir"
    env = os.environ.get(WORDNET_ENV)
    if env:
        return Path(env).expanduser(), f"${WORDNET_ENV}"
    return DEFAULT_WORDNET_DIR, "the default location"


def find_wordnet_dir(explicit: str | None) -> Path | None:
    """The WordNet 3.0 database dir: ``explicit``, else ``$ROSEARCH_WORDNET_DIR``, else
    ``/usr/share/wordnet`` (the first one given is the one checked); None when it lacks the
    files nltk reads (``data.noun``, ``index.sense``, ...)."""
    path, _ = _wordnet_source(explicit)
    return path.resolve() if _is_wordnet_dir(path) else None


def _nltk_has_wordnet() -> bool:
    """Whether nltk already finds a WordNet of its own (e.g. ``nltk.download('wordnet')``)."""
    # lazy: nltk only where WordNet / NLTK data is read
    import nltk

    for name in ("corpora/wordnet", "corpora/wordnet.zip"):
        try:
            nltk.data.find(name)
            return True
        except LookupError:
            continue
    return False


def _missing_wordnet_message(explicit: str | None) -> str:
    path, source = _wordnet_source(explicit)
    missing = [name for name in WORDNET_FILES if not (path / name).is_file()] if path.is_dir() else []
    detail = f" (missing {', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})" if missing else ""
    return (
        f"WordNet 3.0 not found in {path} ({source}){detail}; PWWS needs it "
        f"(fix: `{WORDNET_INSTALL}`, or set attack.wordnet_dir / ${WORDNET_ENV} to a WordNet dict dir "
        "holding data.noun and index.sense, or run scripts/provision_wordnet.sh)"
    )


def wordnet_available(explicit: str | None = None) -> bool:
    """True when WordNet can be provisioned from a WordNet dir, or nltk already has its own
    (the latter only when no dir was named explicitly: a named dir must itself be valid)."""
    if find_wordnet_dir(explicit) is not None:
        return True
    path, source = _wordnet_source(explicit)
    return source == "the default location" and _nltk_has_wordnet()


def require_wordnet(explicit: str | None = None) -> None:
    """Raise :class:`MissingResourceError` unless :func:`wordnet_available`."""
    if not wordnet_available(explicit):
        raise MissingResourceError(_missing_wordnet_message(explicit))


# --------------------------------------------------------------------------------------------
# NLTK data directory
# --------------------------------------------------------------------------------------------


def _write_text_unless_same(path: Path, text: str) -> None:
    """Write ``text`` atomically unless ``path`` already holds it (then nothing is rewritten).

    The temporary names of :mod:`rosearch.files.cache` start with a dot, which keeps nltk's corpus
    readers (fileids ``r"(?!README|\.).*"``) from listing them.
    """
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text_atomically(path, text)


def _lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{category}\n" for i, (name, category) in enumerate(LEXNAMES))


def _wordnet_layout_matches(target: Path, wordnet_dir: Path) -> bool:
    """``target`` is a complete NLTK WordNet dir built from ``wordnet_dir``."""
    if not _is_wordnet_dir(target) or not (target / "lexnames").is_file():
        return False
    try:
        same = all((target / name).stat().st_size == (wordnet_dir / name).stat().st_size for name in WORDNET_FILES)
        return same and (target / "lexnames").read_text(encoding="utf-8") == _lexnames_text()
    except OSError:
        return False


def _provision_wordnet(corpora: Path, wordnet_dir: Path) -> None:
    """Build ``corpora/wordnet`` in a private temp dir, then rename it into place (a concurrent
    copy of the same source is kept; a stale or different one is replaced)."""
    target = corpora / "wordnet"
    if _wordnet_layout_matches(target, wordnet_dir):
        return
    with atomic_dir(target, keep=lambda p: _wordnet_layout_matches(p, wordnet_dir)) as staging:
        for name in (*WORDNET_FILES, *WORDNET_OPTIONAL_FILES):
            if (wordnet_dir / name).is_file():
                # Copies: nltk's path security refuses symlinks out of its root and hard links.
                shutil.copyfile(wordnet_dir / name, staging / name)
        (staging / "lexnames").write_text(_lexnames_text(), encoding="utf-8")
    logger.info("attack: provisioned WordNet from %s into %s", wordnet_dir, target)


def provision_nltk_data(root: Path, *, wordnet_dir: Path | None) -> Path:
    """Write NLTK's layout under ``root``: ``corpora/stopwords/english`` always, and
    ``corpora/wordnet/`` (copies of ``wordnet_dir``'s files, 36 MB, + ``lexnames``) when given.

    Idempotent and safe for concurrent callers: files are replaced atomically and the WordNet
    dir is renamed into place whole. Returns ``root``.
    """
    root = Path(root).expanduser()
    corpora = root / "corpora"
    _write_text_unless_same(corpora / "stopwords" / "english", "\n".join(NLTK_ENGLISH_STOPWORDS) + "\n")
    if wordnet_dir is not None:
        wordnet_dir = Path(wordnet_dir)
        if not _is_wordnet_dir(wordnet_dir):
            raise MissingResourceError(_missing_wordnet_message(str(wordnet_dir)))
        _provision_wordnet(corpora, wordnet_dir)
    return root


def prepare_textattack(cfg: AttackConfig, cache_dir: str | Path) -> Path:
    """Provision NLTK data for ``cfg`` and make nltk (and child processes) see it.

    Call before any ``import textattack``: its import reads the stopword corpus. The root is
    ``cfg.nltk_data`` or ``<cache_dir>/nltk_data``; it is put first on ``nltk.data.path`` and on
    ``$NLTK_DATA`` (inherited by Ray workers). HF offline mode is left alone, so on a machine
    with internet the stock recipes download what they need as usual.
    """
    # lazy: nltk only where WordNet / NLTK data is read
    import nltk

    quiet_known_messages()  # in every process that builds attacks (workers configure their own logging)
    route_nltk_downloads()  # TextAttack's offline nltk.download calls print "Error loading ..." otherwise
    root = Path(cfg.nltk_data).expanduser() if cfg.nltk_data else Path(cache_dir) / "nltk_data"
    root = root.resolve()
    wordnet_dir = find_wordnet_dir(cfg.wordnet_dir)
    if wordnet_dir is None:
        logger.debug("attack: %s", _missing_wordnet_message(cfg.wordnet_dir))
    provision_nltk_data(root, wordnet_dir=wordnet_dir)
    entry = str(root)
    if entry not in nltk.data.path:
        nltk.data.path.insert(0, entry)
    current = os.environ.get("NLTK_DATA", "")
    if entry not in current.split(os.pathsep):
        os.environ["NLTK_DATA"] = entry + (os.pathsep + current if current else "")
    return root


# --------------------------------------------------------------------------------------------
# Synonym-neighbour table
# --------------------------------------------------------------------------------------------


def _neighbors_error(path: str | Path | None, reason: str) -> MissingResourceError:
    return MissingResourceError(
        f"synonym-neighbour table {reason} (fix: set attack.neighbors_path to a JSON or JSON.gz file of "
        f"{{word: [neighbour, ...]}}, e.g. {NEIGHBORS_EXAMPLE}, the counter-fitted neighbourhood of "
        "Jia et al. 2019)"
        + (f"; path: {path}" if path is not None else "")
    )


def load_neighbors(path: str | Path | None) -> Mapping[str, tuple[str, ...]]:
    """The word -> neighbours table at ``path`` (``.json`` or ``.json.gz``), read-only.

    Words are matched lower-cased by the transformation, so keys are lower-cased here.
    """
    if path is None:
        raise _neighbors_error(None, "is not configured (attack.neighbors_path is unset)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise _neighbors_error(path, "file does not exist")
    try:
        raw = file.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _neighbors_error(path, f"is unreadable ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict):
        raise _neighbors_error(path, f"must be a JSON object, got {type(data).__name__}")
    table: dict[str, tuple[str, ...]] = {}
    for word, neighbours in data.items():
        if not isinstance(neighbours, list) or not all(isinstance(n, str) for n in neighbours):
            raise _neighbors_error(path, f"entry {word!r} must be a list of strings, got {neighbours!r:.80}")
        table[word.lower()] = tuple(n for n in neighbours if n != word)
    if not any(table.values()):
        raise _neighbors_error(path, "holds no neighbours at all")
    logger.info("attack: neighbour table %s: %d words, %d with neighbours", file, len(table),
                sum(1 for v in table.values() if v))
    return types.MappingProxyType(table)
