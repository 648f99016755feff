"""Attack recipes on a tiny keyword classifier: each offline recipe really attacks, reports
consistent numbers, and fails fast with a clear error when its resource is missing."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import NEGATIVE, POSITIVE, REPO_ROOT
from rosearch.attack.recipes import NEEDS, RECIPES, build_attack, recipe_names
from rosearch.attack.resources import MissingResourceError, prepare_textattack, wordnet_available
from rosearch.config import AttackConfig
from rosearch.data.tasks import Example

OFFLINE_RECIPES = ("deepwordbug", "pruthi", "pwws", "textfooler-local")

# Sentiment words a keyword model scores; anything else (typos, synonyms outside the tiny
# vocabulary) becomes [UNK] and carries no sentiment, so removing a cue can flip a prediction.
EXAMPLES = (
    Example("the movie was dull", None, 0),  # one cue: flippable
    Example("a boring and tedious plot", None, 0),  # two cues: needs two swaps
    Example("the film was great", None, 1),  # removing the cue keeps it positive: attack fails
    Example("the story is good", None, 0),  # misclassified from the start: skipped
    Example("it was awful and the ending was flat", None, 0),
)
NEIGHBORS = {
    "dull": ["boring", "drab"], "boring": ["tedious", "monotonous"], "tedious": ["boring", "wearisome"],
    "awful": ["terrible", "dreadful"], "flat": ["bland"], "great": ["terrific", "excellent"], "good": ["decent"],
}


class KeywordClassifier(nn.Module):
    """Positive score = #positive cue tokens - #negative cue tokens + 0.25; logits [B, 2].

    Counts forward calls, so tests can tell whether a model was queried at all.
    """

    def __init__(self, tokenizer) -> None:
        super().__init__()
        vocab = tokenizer.get_vocab()
        weights = torch.zeros(len(vocab))
        for word in POSITIVE:
            weights[vocab[word]] = 1.0
        for word in NEGATIVE:
            weights[vocab[word]] = -1.0
        self.weights = nn.Parameter(weights)
        self.config = SimpleNamespace(num_labels=2)
        self.calls = 0

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        self.calls += 1
        score = (self.weights[input_ids] * attention_mask).sum(dim=1) + 0.25  # [B]
        return SimpleNamespace(logits=torch.stack([-score, score], dim=1))  # [B, 2]


@pytest.fixture(scope="module")
def attack_cfg(tmp_path_factory) -> AttackConfig:
    """NLTK data provisioned in pytest's tmp dir, and textattack imported once (~10 s)."""
    root = tmp_path_factory.getbasetemp()
    neighbors = root / "attack-neighbors.json"
    neighbors.write_text(json.dumps(NEIGHBORS), encoding="utf-8")
    cfg = AttackConfig(nltk_data=str(root / "attack-nltk-data"), neighbors_path=str(neighbors), model_batch_size=4)
    prepare_textattack(cfg, root)
    import textattack  # noqa: F401

    return cfg


@pytest.fixture()
def keyword_model(tiny_tokenizer) -> KeywordClassifier:
    return KeywordClassifier(tiny_tokenizer)


def wrap(model, tokenizer):
    from rosearch.attack.wrapper import make_wrapper

    return make_wrapper(model, tokenizer, max_length=32, batch_size=4, device="cpu")


def test_importing_the_package_does_not_import_textattack():
    code = ("import sys, rosearch.attack, rosearch.attack.recipes, rosearch.attack.runner, rosearch.attack.command; "
            "sys.exit('textattack' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=120).returncode == 0


def test_registry():
    assert isinstance(RECIPES, types.MappingProxyType)
    assert recipe_names() == ("deepwordbug", "pruthi", "pwws", "textfooler", "textfooler-local", "deepwordbug-adaptive",
                              "pwws-adaptive")
    for name, spec in RECIPES.items():
        assert spec.name == name and set(spec.needs) <= NEEDS and spec.paper and spec.setting
    assert RECIPES["pwws"].needs == ("wordnet",) and RECIPES["textfooler-local"].needs == ("neighbors",)


def test_unknown_recipe_lists_the_known_ones(attack_cfg, keyword_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="unknown attack recipe 'pwwz'.*deepwordbug, pruthi, pwws"):
        build_attack("pwwz", wrap(keyword_model, tiny_tokenizer), attack_cfg)


def test_missing_neighbors_fails_before_any_query(attack_cfg, keyword_model, tiny_tokenizer):
    from rosearch.attack.runner import attack_model

    cfg = AttackConfig(nltk_data=attack_cfg.nltk_data, neighbors_path=None, recipe="textfooler-local")
    with pytest.raises(MissingResourceError, match="attack.neighbors_path"):
        attack_model(keyword_model, tiny_tokenizer, EXAMPLES, cfg, cache_dir="unused", model_name="kw",
                     max_length=32, device="cpu")
    assert keyword_model.calls == 0


def test_missing_wordnet_names_the_field(attack_cfg, keyword_model, tiny_tokenizer, tmp_path):
    cfg = AttackConfig(nltk_data=attack_cfg.nltk_data, wordnet_dir=str(tmp_path))  # an empty dir
    with pytest.raises(MissingResourceError, match="attack.wordnet_dir"):
        build_attack("pwws", wrap(keyword_model, tiny_tokenizer), cfg)
    assert keyword_model.calls == 0


def test_stock_textfooler_offline_points_to_the_local_variant(attack_cfg, keyword_model, tiny_tokenizer):
    import importlib.util

    if importlib.util.find_spec("tensorflow_hub") is not None:
        pytest.skip("tensorflow_hub is installed: stock TextFooler may work here")
    with pytest.raises(MissingResourceError, match="textfooler-local"):
        build_attack("textfooler", wrap(keyword_model, tiny_tokenizer), attack_cfg)


def test_budget_and_batch_size_reach_the_goal_function(attack_cfg, keyword_model, tiny_tokenizer):
    cfg = AttackConfig(nltk_data=attack_cfg.nltk_data, query_budget=7, model_batch_size=3)
    built = build_attack("deepwordbug", wrap(keyword_model, tiny_tokenizer), cfg)
    assert built.attack.goal_function.query_budget == 7 and built.attack.goal_function.batch_size == 3
    unlimited = build_attack("deepwordbug", wrap(keyword_model, tiny_tokenizer), attack_cfg)
    assert unlimited.attack.goal_function.query_budget == float("inf")
    assert built.constraints == ("RepeatModification", "StopwordModification(198 stopwords)", "LevenshteinEditDistance(30)")


@pytest.mark.parametrize("recipe", OFFLINE_RECIPES)
def test_offline_recipe_attacks_consistently(recipe, attack_cfg, keyword_model, tiny_tokenizer, tmp_path):
    from rosearch.attack.runner import attack_model

    if recipe == "pwws" and not wordnet_available(attack_cfg.wordnet_dir):
        pytest.skip("WordNet 3.0 is not installed (apt-get install wordnet-base wordnet-sense-index)")
    report = attack_model(keyword_model, tiny_tokenizer, EXAMPLES, attack_cfg, recipe=recipe, cache_dir=tmp_path,
                          model_name="kw", max_length=32, device="cpu")
    n = len(EXAMPLES)
    assert report.recipe == recipe and report.n == n == len(report.examples)
    assert report.successful + report.failed + report.skipped == n
    assert report.skipped == 1 and report.examples[3].status == "skipped"  # "the story is good" labelled 0
    assert report.examples[2].status == "failed"  # no swap makes "great" negative
    assert report.successful >= 1 and report.examples[0].status == "successful"
    assert report.accuracy_under_attack <= report.clean_accuracy == (n - 1) / n
    assert report.attack_success_rate == report.successful / (report.successful + report.failed)
    wrapper = wrap(keyword_model, tiny_tokenizer)
    for row in report.examples:
        if row.status == "successful":
            assert row.perturbed != row.original and 0 < row.perturbed_word_pct <= 100
            assert int(wrapper([row.perturbed]).argmax()) == row.perturbed_prediction != row.label
        else:
            assert row.perturbed is None and row.perturbed_word_pct is None
    assert report.constraints and report.constraints[0] in ("RepeatModification", "MinWordLength(4)")


def test_textfooler_local_reports_its_departures(attack_cfg, keyword_model, tiny_tokenizer, tiny_teacher_dir):
    cfg = AttackConfig(nltk_data=attack_cfg.nltk_data, neighbors_path=attack_cfg.neighbors_path,
                       sentence_encoder=str(tiny_teacher_dir))
    built = build_attack("textfooler-local", wrap(keyword_model, tiny_tokenizer), cfg)
    assert built.constraints[:3] == (
        "RepeatModification", "StopwordModification(266 stopwords)", "InputColumnModification(pairs: first text frozen)",
    )
    assert any(c.startswith(f"SentenceEncoder({tiny_teacher_dir}, angular>=0.841") and c.endswith("window 15)")
               for c in built.constraints)
    assert any("WordEmbeddingDistance" in note and "dropped" in note for note in built.notes)
    assert any("UniversalSentenceEncoder replaced" in note for note in built.notes)
    without = build_attack("textfooler-local", wrap(keyword_model, tiny_tokenizer), attack_cfg)
    assert not any(c.startswith("SentenceEncoder") for c in without.constraints)
    assert any("attack.sentence_encoder" in note for note in without.notes)
    assert keyword_model.calls == 0  # building never queries the model


def test_pair_inputs_keep_the_first_text(attack_cfg, keyword_model, tiny_tokenizer, tmp_path):
    from rosearch.attack.runner import attack_model

    pairs = [Example("the plot was dull", "the movie was dull", 0)]
    report = attack_model(keyword_model, tiny_tokenizer, pairs, attack_cfg, recipe="textfooler-local",
                          cache_dir=tmp_path, model_name="kw", max_length=32, device="cpu",
                          text_columns=("premise", "hypothesis"))
    # Both "dull"s are cues, but only the hypothesis' may change: -2 + 0.25 -> -1 + 0.25 stays negative.
    assert report.examples[0].status == "failed"


def test_mean_pooled_encoder_is_padding_invariant(tiny_teacher_dir):
    from transformers import AutoModel, AutoTokenizer

    from rosearch.attack.recipes import MeanPooledEncoder

    encoder = MeanPooledEncoder(str(tiny_teacher_dir), "cpu")
    sentences = ["a good film", "the plot was very dull and the acting was quite flat"]
    together = encoder.encode(sentences)  # [2, 32]
    alone = torch.cat([encoder.encode([s]) for s in sentences])
    assert together.shape == (2, 32) and torch.allclose(together, alone, atol=1e-5)
    model, tokenizer = AutoModel.from_pretrained(tiny_teacher_dir).eval(), AutoTokenizer.from_pretrained(tiny_teacher_dir)
    with torch.no_grad():
        manual = model(**tokenizer(sentences[:1], return_tensors="pt")).last_hidden_state.mean(dim=1)
    assert torch.allclose(together[:1], manual, atol=1e-5)
