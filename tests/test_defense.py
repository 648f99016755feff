"""Input defenses: word recognition, synonym encoding, their composition, persistence, the
attack wrapper querying through them, and the search exploring them as genes."""

from __future__ import annotations

import gzip
import json
import pickle

import pytest

from rosearch.config import ConfigError, config_from_dict
from rosearch.defense import DEFENSE_FILE, Defense, DefenseError, DefenseResources, defend_pair, load_defense
from rosearch.defense.synonym_encoding import SynonymEncoder, build_clusters
from rosearch.defense.word_recognition import WordRecognizer, osa_distance
from rosearch.defense.words import map_words, word_counts
from rosearch.search_space.genome import Genome, InvalidGenomeError

from conftest import NEGATIVE, NEUTRAL, POSITIVE

COUNTS = {"the": 50, "movie": 20, "film": 12, "is": 40, "terrible": 5, "terrific": 2, "boring": 6, "bring": 3,
          "great": 9, "good": 15, "fine": 4, "awful": 3, "dreadful": 1, "a": 60, "very": 10, "and": 30}
RELATIONS = {"movie": ["film", "picture"], "film": ["movie", "picture"], "picture": ["film", "movie"],
             "good": ["fine", "great"], "great": ["good"], "fine": ["good"], "awful": ["dreadful", "terrible"],
             "terrible": ["awful"], "dreadful": ["awful"]}


def test_osa_distance_counts_an_adjacent_swap_as_one_edit():
    assert osa_distance("terrible", "terrible") == 0
    assert osa_distance("terrible", "terribel") == 1  # adjacent swap (DeepWordBug's first transformation)
    assert osa_distance("terrible", "terible") == 1  # deletion
    assert osa_distance("terrible", "terrXible") == 1  # insertion
    assert osa_distance("terrible", "terrinle") == 1  # substitution
    assert osa_distance("abc", "ca") == 3  # OSA, not full Damerau: no edit of a swapped pair


def test_word_recognition_restores_hand_made_character_attacks():
    recognize = WordRecognizer(COUNTS, max_distance=2)
    perturbed = "the moive is terribel , the flim is borinng and very gerat"
    assert recognize(perturbed) == "the movie is terrible , the film is boring and very great"
    assert recognize("The MOVIE is Terrible") == "the movie is terrible"  # random substitutions may be upper case


def test_word_recognition_keeps_clean_text_and_prefers_frequent_words():
    recognize = WordRecognizer(COUNTS, max_distance=2)
    clean = "the film is terrible , a very good movie ; 10 / 10"
    assert recognize(clean) == clean
    # "terrifble" is 1 edit from "terrible" (freq 5) and from "terrific"? no: 2 from "terrific"; distance first
    assert recognize.recognize("terrifble") == "terrible"
    # "brng" is 1 edit from "bring" (3) and 2 from "boring": the smaller distance wins over frequency
    assert recognize.recognize("brng") == "bring"
    # equal distance: the more frequent word wins ("mvie" -> movie 20, not "move"-like absent words)
    assert recognize.recognize("mvie") == "movie"


def test_word_recognition_backoff():
    neutral = WordRecognizer(COUNTS, max_distance=1, backoff="neutral", neutral_word="unk")
    keep = WordRecognizer(COUNTS, max_distance=1, backoff="keep")
    assert neutral("the xqzvw movie") == "the unk movie"
    assert keep("the xqzvw movie") == "the xqzvw movie"
    assert neutral(neutral("the xqzvw movie")) == "the unk movie"  # idempotent: the neutral word is known
    with pytest.raises(ValueError, match="defense.max_edit_distance"):
        WordRecognizer(COUNTS, max_distance=0)
    with pytest.raises(ValueError, match="lexicon"):
        WordRecognizer({})


def test_synonym_clusters_are_deterministic_idempotent_and_frequency_ordered():
    mapping = build_clusters(COUNTS, RELATIONS)
    assert mapping == build_clusters(dict(reversed(list(COUNTS.items()))), {k: list(reversed(v)) for k, v in RELATIONS.items()})
    encoder = SynonymEncoder(mapping)
    assert encoder.encode("film") == "movie" and encoder.encode("picture") == "movie"  # movie is the most frequent
    assert encoder.encode("great") == "good" and encoder.encode("fine") == "good"
    assert encoder.encode("terrible") == "terrible" and encoder.encode("awful") == "terrible"
    text = "a great film , truly awful picture"
    once = encoder(text)
    assert once == "a good movie , truly terrible movie"
    assert encoder(once) == once
    # every swap inside a cluster gives the model the same text
    assert encoder("a fine picture") == encoder("a good movie") == encoder("a great film")


def test_defense_composes_recognition_then_encoding_and_round_trips(tmp_path):
    resources = DefenseResources(counts=COUNTS, synonyms=build_clusters(COUNTS, RELATIONS))
    defense = Defense(["synonym_encoding", "word_recognition"], resources)
    assert defense.names == ("word_recognition", "synonym_encoding")  # application order, whatever the input order
    # a typo of a synonym is first recognised, then encoded; a real synonym outside the lexicon is kept, then encoded
    assert defense(["a gerat flim", "a great picture"]) == ["a good movie", "a good movie"]
    assert defend_pair(defense, [("a gerat flim", "the moive")]) == [("a good movie", "the movie")]
    assert defend_pair(None, ["a gerat flim"]) == ["a gerat flim"]
    defense.save(tmp_path)
    loaded = load_defense(tmp_path)
    assert loaded is not None and loaded.names == defense.names
    texts = ["the moive is terribel", "a fine picture", "xqzvw"]
    assert loaded(texts) == defense(texts)
    clone = pickle.loads(pickle.dumps(defense))  # workers get names + resources and rebuild
    assert clone(texts) == defense(texts)
    assert load_defense(tmp_path / "nothing-here") is None
    (tmp_path / DEFENSE_FILE).write_bytes(b"not gzip")
    with pytest.raises(DefenseError, match="damaged"):
        load_defense(tmp_path)
    (tmp_path / DEFENSE_FILE).write_bytes(gzip.compress(json.dumps({"format": 99}).encode()))
    with pytest.raises(DefenseError, match="format"):
        load_defense(tmp_path)


def test_word_recognition_only_saves_no_synonym_table(tmp_path):
    resources = DefenseResources(counts=COUNTS, synonyms=build_clusters(COUNTS, RELATIONS))
    Defense(["word_recognition"], resources).save(tmp_path)
    payload = json.loads(gzip.decompress((tmp_path / DEFENSE_FILE).read_bytes()))
    assert payload["defenses"] == ["word_recognition"] and payload["resources"]["synonyms"] == {}


def test_words_keep_everything_that_is_not_a_letter_run():
    assert map_words("it 's 10/10 -- isn't it ?", str.upper) == "IT 'S 10/10 -- ISN'T IT ?"
    assert word_counts(["A film", "a FILM, a plot"]) == {"a": 3, "film": 2, "plot": 1}


def test_genome_defenses_keep_old_hashes_and_round_trip():
    from rosearch.search_space.genome import CellSpec

    cell = CellSpec(((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", "ffn_r1_gelu", "output"))
    plain = Genome(32, 16, (cell,))
    defended = Genome(32, 16, (cell,), ("synonym_encoding", "word_recognition"))
    assert "defenses" not in plain.to_dict()
    assert defended.defenses == ("word_recognition", "synonym_encoding")
    assert defended.hash() != plain.hash() and defended.architecture().hash() == plain.hash()
    assert Genome.from_json(defended.to_json()) == defended
    with pytest.raises(InvalidGenomeError, match="unknown defense"):
        Genome(32, 16, (cell,), ("spellcheck",))


def test_defense_config_errors_name_the_field(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from test_search import tiny_search_dict

    def config(**sections):
        return config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **sections))

    with pytest.raises(ConfigError, match="search_space.defense_choices"):
        config(search_space={"defenses": ["word_recognition"], "defense_choices": ["word_recognition"]})
    with pytest.raises(ConfigError, match="search_space.defenses"):
        config(search_space={"defenses": ["spellcheck"]})
    with pytest.raises(ConfigError, match="attack.neighbors_path"):
        config(search_space={"defenses": ["synonym_encoding"]})
    with pytest.raises(ConfigError, match="distill.methods"):
        config(search_space={"defenses": ["synonym_encoding"]}, defense={"synonym_sources": ["wordnet"]},
               distill={"methods": ["layer_kd"]})
    with pytest.raises(ConfigError, match="defense.neutral_word"):
        config(defense={"neutral_word": "[UNK]"})


def test_wrapper_queries_through_the_defense(tmp_path, tiny_tokenizer, tiny_teacher_dir, single_thread):
    import torch
    from transformers import AutoModelForSequenceClassification

    from rosearch.attack.resources import prepare_textattack
    from rosearch.attack.wrapper import make_wrapper
    from rosearch.config import AttackConfig

    prepare_textattack(AttackConfig(nltk_data=str(tmp_path / "nltk")), tmp_path)  # before textattack's import

    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    counts = word_counts([" ".join(NEUTRAL + POSITIVE + NEGATIVE)])
    defense = Defense(["word_recognition"], DefenseResources(counts=counts))
    plain = make_wrapper(model, tiny_tokenizer, max_length=32, batch_size=4, device="cpu")
    defended = make_wrapper(model, tiny_tokenizer, max_length=32, batch_size=4, device="cpu", defense=defense)
    clean, attacked = "the movie was brilliant and witty", "the moive was brillaint and wtity"
    with torch.inference_mode():
        assert (defended([attacked]) == plain([clean])).all()  # the typos never reach the model
        assert not (plain([attacked]) == plain([clean])).all()


def _tiny_neighbours(tmp_path):
    table = {w: [v for v in group if v != w] for group in (POSITIVE[:5], NEGATIVE[:5]) for w in group}
    path = tmp_path / "neighbours.json"
    path.write_text(json.dumps(table), encoding="utf-8")
    return path


def test_a_tiny_search_explores_defense_genes(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from test_search import check_store

    from rosearch.search import run_search

    data = {
        "search_space": {"defense_choices": ["word_recognition", "typo_encoding", "synonym_encoding"]},
        "defense": {"synonym_sources": ["counterfitted"]},
        "attack": {"neighbors_path": str(_tiny_neighbours(tmp_path))},
    }
    from test_search import tiny_search_dict

    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **data))
    summary = run_search(config)
    assert summary.failed == 0
    records = check_store(config.run.run_dir, expect_ok=8)
    carried = {Genome.from_json(r.genome_json).defenses for r in records}
    assert len(carried) >= 2  # the initial population alone samples each choice with p = 1/2
    for r in records:
        genome = Genome.from_json(r.genome_json)
        assert r.genome_hash == genome.hash()
        assert set(genome.defenses) <= {"word_recognition", "typo_encoding", "synonym_encoding"}
    assert {name for names in carried for name in names} >= {"typo_encoding"}  # the new gene is explored


def test_defended_splits_are_what_the_student_sees(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    """prepare builds every defense combination; the encoder maps synonyms to one token."""
    from test_search import tiny_search_dict

    from rosearch.prepare.inputs import prepare_inputs

    data = {"search_space": {"defenses": ["synonym_encoding"]}, "defense": {"synonym_sources": ["counterfitted"]},
            "attack": {"neighbors_path": str(_tiny_neighbours(tmp_path))}}
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **data))
    import torch

    inputs = prepare_inputs(config, torch.device("cpu"))
    assert set(inputs.defended_splits) == {"synonym_encoding"}
    defended = inputs.for_defenses(("synonym_encoding",))
    assert len(defended.train) == len(inputs.train) and (defended.train.labels == inputs.train.labels).all()
    defense = inputs.defense(("synonym_encoding",))
    # in the tiny data every positive cue word of the cluster is written as its representative
    rep = defense.apply(POSITIVE[1])
    assert all(defense.apply(w) == rep for w in POSITIVE[:5])
    assert inputs.defense(()) is None and inputs.for_defenses(()) is inputs
    with pytest.raises(ValueError, match="word_recognition"):
        inputs.for_defenses(("word_recognition",))


def test_export_keeps_the_defense_and_predicts_identically_on_perturbed_text(tmp_path, tiny_sst2_dir, tiny_teacher_dir,
                                                                              single_thread):
    """Every candidate carries word recognition: the export saves it, reloads it, and the reloaded
    pipeline gives the searched model's logits on misspelt text; the model card lists it."""
    import torch
    from test_search import tiny_search_dict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rosearch.records.artifacts import load_student, read_candidate_files
    from rosearch.commands.export import export_students
    from rosearch.search import run_search
    from rosearch.student.modeling import register_auto_classes

    data = {"search_space": {"defenses": ["word_recognition"]}, "evolution": {"generations": 1}}
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **data))
    run_search(config)
    run_dir = config.run.run_dir
    assert load_defense(run_dir).names == ("word_recognition",)  # the run keeps its defense resources
    (folder,) = export_students(run_dir, tmp_path / "out", top=1, device="cpu")
    defense = load_defense(folder)
    assert defense is not None and defense.names == ("word_recognition",)
    assert "word recognition" in (folder / "README.md").read_text()
    register_auto_classes()
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True).eval()
    genome_hash = json.loads((folder / "metrics.json").read_text())["genome_hash"]
    searched = load_student(read_candidate_files(run_dir, genome_hash)).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    clean, perturbed = ["the film was witty and charming"], ["teh flim was wttiy and chraming"]
    with torch.no_grad():
        def logits(model, texts):
            return model(**tokenizer(defense(texts), return_tensors="pt")).logits

        assert torch.equal(logits(reloaded, perturbed), logits(searched, perturbed))
        assert torch.equal(logits(reloaded, perturbed), logits(reloaded, clean))  # the typos are repaired
    # a plain transformers pipeline (after register_auto_classes) applies the defense through the tokenizer
    from transformers import pipeline

    assert type(tokenizer).__name__ == "DefendedTokenizerFast"
    classify = pipeline("text-classification", model=str(folder), device="cpu", top_k=None)
    scores = {d["label"]: d["score"] for d in classify(perturbed)[0]}
    with torch.no_grad():
        expected = torch.softmax(logits(searched, clean)[0], dim=-1)
    assert scores["positive"] == pytest.approx(float(expected[1]), abs=1e-5)
    assert tokenizer(perturbed)["input_ids"] == tokenizer(clean)["input_ids"]
    resaved = tmp_path / "resaved"
    tokenizer.save_pretrained(resaved)  # re-saving keeps the defense beside it
    assert load_defense(resaved).names == defense.names


def test_adaptive_recipes_attack_around_the_defense(tmp_path, tiny_tokenizer, tiny_teacher_dir, single_thread):
    """deepwordbug-adaptive only proposes real-word typos; pwws-adaptive only swaps that change
    the defended text; both refuse an undefended model."""
    from transformers import AutoModelForSequenceClassification

    from rosearch.attack.recipes import _local_classes, build_attack
    from rosearch.attack.resources import prepare_textattack
    from rosearch.attack.runner import attack_model
    from rosearch.attack.wrapper import make_wrapper
    from rosearch.config import AttackConfig
    from rosearch.data.tasks import Example

    cfg = AttackConfig(nltk_data=str(tmp_path / "nltk"), model_batch_size=8, seed=1)
    prepare_textattack(cfg, tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir).eval()
    counts = word_counts([" ".join(NEUTRAL + POSITIVE + NEGATIVE + ["fat", "flit", "fin", "line"])])
    defense = Defense(["word_recognition", "synonym_encoding"],
                      DefenseResources(counts=counts, synonyms=build_clusters(counts, {"good": ["fine", "superb"]})))
    plain = make_wrapper(model, tiny_tokenizer, max_length=32, batch_size=8, device="cpu")
    unadapted = build_attack("deepwordbug-adaptive", plain, cfg)  # nothing to adapt to: the stock recipe
    assert unadapted.recipe == "deepwordbug-adaptive" and "stock deepwordbug" in unadapted.notes[-1]
    assert type(unadapted.attack.transformation).__name__ == type(build_attack("deepwordbug", plain, cfg)
                                                                   .attack.transformation).__name__
    local = _local_classes()
    swap = local.RealWordCharSwap(defense.known_words().__contains__)
    assert swap._get_replacement_words("flat") == ["fat", "flit"]  # deletion, substitution: both real words
    crossing = local.DefenseCrossingSwap(local.RealWordCharSwap(lambda w: w in {"fine", "fin", "line"}), defense)
    assert crossing._get_replacement_words("fine") == ["fin", "line"]  # "fine" itself is never proposed
    wrapper = make_wrapper(model, tiny_tokenizer, max_length=32, batch_size=8, device="cpu", defense=defense)
    examples = [Example("the film was good and witty", None, 1), Example("a dull , boring plot", None, 0)]
    for recipe in ("deepwordbug-adaptive", "pwws-adaptive"):
        built = build_attack(recipe, wrapper, cfg)
        assert any("adaptive" in note for note in built.notes)
        report = attack_model(model, tiny_tokenizer, examples, cfg, recipe=recipe, cache_dir=tmp_path,
                              model_name="tiny", max_length=32, device="cpu", defense=defense)
        assert report.successful + report.failed + report.skipped == 2


def test_stats_report_defense_effects_next_to_the_ops(tmp_path, tiny_sst2_dir, tiny_teacher_dir):
    from test_search import tiny_search_dict

    from rosearch.results.stats import compute_stats
    from rosearch.search import run_search

    data = {"search_space": {"defense_choices": ["word_recognition"]}, "evolution": {"generations": 1}}
    config = config_from_dict(tiny_search_dict(tmp_path, tiny_sst2_dir, tiny_teacher_dir, **data))
    run_search(config)
    report = compute_stats(config.run.run_dir, top_k=2)
    frame = report.frame
    carried = frame["defense_word_recognition"]
    assert set(carried) <= {0, 1} and carried.sum() == frame["defenses"].map(len).sum()
    rows = report.op_stats[report.op_stats["level"] == "defense"]
    if carried.any():
        (row,) = rows.to_dict("records")
        assert row["op"] == "word_recognition" and row["n_with"] == carried.sum()
        assert row["mean_accuracy_with"] == pytest.approx(frame.loc[carried == 1, "accuracy"].mean())
    assert "defense_word_recognition" in set(report.correlations["feature"])
    paths = report.write_csv(tmp_path / "stats")
    assert any(p.name == "architectures.csv" for p in paths)
