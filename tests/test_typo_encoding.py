"""Typo encoding: star clusters around frequent words, what one real-word typo can and cannot
move, its place in the defense pipeline, persistence and config errors (the search gene is explored
in test_defense.py's tiny search)."""

from __future__ import annotations

import string

import pytest

from rosearch.config import ConfigError, config_from_dict
from rosearch.defense import Defense, DefenseResources, load_defense
from rosearch.defense.typo_encoding import TypoEncoder, build_typo_codes, confusable_pairs, coverage
from rosearch.defense.word_recognition import osa_distance
from rosearch.search_space.genome import Genome

# "bad"/"had" and "good" are frequent (anchors at 50); the rest are rare words one or two edits away
COUNTS = {"bad": 100, "had": 80, "bid": 3, "bed": 5, "bag": 2, "good": 200, "god": 2, "goad": 1, "wood": 4,
          "film": 60, "firm": 1, "fill": 9, "the": 300, "she": 90, "dull": 20, "doll": 2, "dell": 1,
          "was": 70, "a": 400}


def one_edit_typos(word: str) -> set[str]:
    """Every string one OSA edit from ``word``: DeepWordBug's swap, deletion, insertion, substitution."""
    out = set()
    for i in range(len(word)):
        out.add(word[:i] + word[i + 1:])
        for c in string.ascii_lowercase:
            out.add(word[:i] + c + word[i + 1:])
        if i + 1 < len(word):
            out.add(word[:i] + word[i + 1] + word[i] + word[i + 2:])
    for i in range(len(word) + 1):
        for c in string.ascii_lowercase:
            out.add(word[:i] + c + word[i:])
    out.discard(word)
    return out


def test_confusable_pairs_are_exactly_the_words_within_the_distance():
    pairs = confusable_pairs(COUNTS, 1)
    for a in COUNTS:
        expected = {b for b in COUNTS if b != a and osa_distance(a, b) <= 1}
        assert pairs[a] == expected, a
    assert "bed" in pairs["bad"] and "had" in pairs["bad"] and "good" in pairs["god"]


def test_codes_are_stars_around_frequent_words_and_anchors_keep_their_identity():
    codes = build_typo_codes(COUNTS, max_distance=1, min_ratio=2.0, anchor_count=50)
    assert codes["bid"] == "bad" and codes["bed"] == "bad" and codes["bag"] == "bad"  # the most frequent head
    assert codes["god"] == "good" and codes["goad"] == "good"
    assert codes["firm"] == "film" and codes["fill"] == "film" and codes["doll"] == "dull"
    for anchor in ("bad", "had", "good", "film", "the", "she"):  # seen >= 50 times: never re-coded
        assert anchor not in codes
    assert "wood" in codes and codes["wood"] == "good"  # 200 >= 2 x 4
    assert "dell" in codes and codes["dell"] == "dull"  # joins the head, not "doll" (a member itself)
    assert all(head not in codes for head in codes.values())  # every code is a head: the map is idempotent
    # min_ratio: at 10, "fill" (9) would need a head seen >= 90 times ("film" has 60), so it heads itself
    assert "fill" not in build_typo_codes(COUNTS, min_ratio=10.0)
    assert build_typo_codes(dict(reversed(list(COUNTS.items())))) == codes  # independent of input order


def test_one_real_word_typo_cannot_move_a_covered_word():
    codes = build_typo_codes(COUNTS, max_distance=1, min_ratio=2.0, anchor_count=50)
    encoder = TypoEncoder(codes)
    pairs = confusable_pairs(COUNTS, 1)
    covered = [w for w in COUNTS if all(encoder.encode(v) == encoder.encode(w) for v in pairs[w])]
    assert "good" in covered and "dull" in covered and "film" in covered
    assert "bad" not in covered  # "bad" -> "had" is a real-word typo between two anchors: exposed
    for word in covered:
        for typo in one_edit_typos(word) & set(COUNTS):  # every one-edit typo that is a lexicon word
            assert encoder.encode(typo) == encoder.encode(word), (word, typo)
    stats = coverage(COUNTS, codes)
    total = sum(COUNTS.values())
    assert stats.covered_token_share == pytest.approx(sum(COUNTS[w] for w in covered) / total)
    assert stats.covered_token_share + stats.exposed_token_share == pytest.approx(1.0)
    assert stats.covered_token_share > coverage(COUNTS, {}).covered_token_share  # the encoding covers more text


def test_with_word_recognition_every_typo_of_a_covered_word_reaches_its_code():
    """Non-words go to word recognition first; for the covered words of a sparse lexicon every
    one-edit typo, word or not, ends on the word's code."""
    counts = {"good": 200, "god": 2, "goad": 1, "film": 60, "firm": 1, "fill": 9, "plot": 40}
    codes = build_typo_codes(counts, max_distance=1, min_ratio=2.0, anchor_count=50)
    defense = Defense(["word_recognition", "typo_encoding"], DefenseResources(counts=counts, typo_codes=codes,
                                                                                max_distance=1))
    for word in ("good", "film", "plot"):
        code = defense.apply(word)
        moved = [t for t in one_edit_typos(word) if defense.apply(t) not in (code, "unk")]
        assert not moved, (word, moved[:5])


def test_encoder_refuses_a_table_whose_codes_are_recoded():
    with pytest.raises(ValueError, match="build_typo_codes"):
        TypoEncoder({"bid": "bed", "bed": "bad"})
    with pytest.raises(ValueError, match="defense.typo_min_ratio"):
        build_typo_codes(COUNTS, min_ratio=0.5)


def test_defense_pipeline_orders_recognition_synonyms_then_typos_and_round_trips(tmp_path):
    codes = build_typo_codes(COUNTS)
    resources = DefenseResources(counts=COUNTS, synonyms={"fine": "good", "movie": "film"}, typo_codes=codes)
    defense = Defense(["synonym_encoding", "typo_encoding", "word_recognition"], resources)
    assert defense.names == ("word_recognition", "synonym_encoding", "typo_encoding")
    assert defense.apply("the goad movie was dell") == "the good film was dull"
    assert defense.apply("the gooad flim") == "the good film"  # recognised (then encoded)
    assert defense(defense(["a bid doll"])) == defense(["a bid doll"]) == ["a bad dull"]  # idempotent
    assert defense.describe()["typo_encoding"] == {"recoded_words": len(codes), "heads": len(set(codes.values()))}
    defense.save(tmp_path)
    loaded = load_defense(tmp_path)
    assert loaded is not None and loaded.names == defense.names and loaded.apply("goad") == "good"
    # a defense without typo encoding saves no typo table
    Defense(["word_recognition"], resources).save(tmp_path)
    assert load_defense(tmp_path).resources.typo_codes == {}


def test_typo_config_errors_name_the_field():
    for key, value, field in (("typo_edit_distance", 3, "defense.typo_edit_distance"),
                              ("typo_min_ratio", 0.5, "defense.typo_min_ratio"),
                              ("typo_anchor_count", 0, "defense.typo_anchor_count")):
        with pytest.raises(ConfigError, match=field):
            config_from_dict({"defense": {key: value}})
    with pytest.raises(ConfigError, match="typo_encoding"):
        config_from_dict({"search_space": {"defenses": ["typo_encoding"]}, "distill": {"methods": ["layer_kd"]}})


def test_genome_carries_typo_encoding_in_application_order():
    genome = Genome.from_json(Genome.from_json(_reference_genome()).to_json())
    with_typo = Genome(genome.hidden_size, genome.embedding_size, genome.cells,
                       ("typo_encoding", "word_recognition"))
    assert with_typo.defenses == ("word_recognition", "typo_encoding")
    assert Genome.from_json(with_typo.to_json()) == with_typo
    assert with_typo.hash() != Genome(genome.hidden_size, genome.embedding_size, genome.cells,
                                      ("word_recognition",)).hash()


def _reference_genome() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "bench" / "reference_genome.json").read_text()


def test_after_synonym_encoding_every_synonym_still_shares_a_code_and_the_defense_is_idempotent():
    from rosearch.defense.synonym_encoding import build_clusters
    from rosearch.prepare.defense import encoded_counts

    relations = {"good": ["fine", "great"], "fine": ["good"], "great": ["good"], "film": ["movie"], "movie": ["film"],
                 "dull": ["boring"], "boring": ["dull"]}
    counts = dict(COUNTS, fine=6, great=40, movie=30, boring=15, bring=2)
    synonyms = build_clusters(counts, relations)
    codes = build_typo_codes(encoded_counts(counts, synonyms))
    defense = Defense(["word_recognition", "synonym_encoding", "typo_encoding"],
                      DefenseResources(counts=counts, synonyms=synonyms, typo_codes=codes))
    for group in (["good", "fine", "great"], ["film", "movie"], ["dull", "boring"]):
        assert len({defense.apply(w) for w in group}) == 1, group  # synonym invariance kept
    assert defense.apply("god") == defense.apply("good") == "good"  # the typo star around a representative
    texts = [" ".join(sorted(counts)), "the goad movie was dell", "a firm , bid film"]
    once = defense(texts)
    assert defense(once) == once
