"""EDA augmentation (Wei & Zou 2019): determinism, what each operation may change, CJK text, augment_examples."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lmforge.data import read_task_file
from lmforge.data.augment import ENGLISH_SYNONYMS, OPS, STOP_WORDS, EDAConfig, Op, augment_examples, eda
from lmforge.errors import ConfigError, DataError

# 20 words, so n = round(0.1 * 20) = 2; every non-stop word here is in ENGLISH_SYNONYMS
SENTENCE = "The acting is good , but the plot is really predictable and the ending is a boring , lazy mistake"
LONG = " ".join(f"w{i}" for i in range(40))  # 40 distinct words without synonyms
ZH = "这家店的菜很好吃，服务也很周到，送餐非常快"  # 21 CJK characters, no spaces
SEEDS = range(30)
CJK_SPACE_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef] [\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def only(op: Op, alpha: float = 0.1, n_aug: int = 4) -> EDAConfig:
    return EDAConfig(alpha=alpha, n_aug=n_aug, ops=(op,))


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(w in it for w in short)


# --- determinism ----------------------------------------------------------------------------------
def test_same_seed_same_output() -> None:
    cfg = EDAConfig(n_aug=8)
    assert eda(SENTENCE, cfg, random.Random(7)) == eda(SENTENCE, cfg, random.Random(7))
    texts, labels = [SENTENCE, ZH, "a fun , clever film"], [1, 1, 1]
    assert augment_examples(texts, labels, cfg, seed=3) == augment_examples(texts, labels, cfg, seed=3)


def test_different_seed_different_output() -> None:
    cfg = EDAConfig(n_aug=8)
    assert eda(SENTENCE, cfg, random.Random(1)) != eda(SENTENCE, cfg, random.Random(2))
    texts, labels = [SENTENCE, ZH, "a fun , clever film"], [1, 1, 1]
    assert augment_examples(texts, labels, cfg, seed=1)[0] != augment_examples(texts, labels, cfg, seed=2)[0]


def test_output_does_not_depend_on_the_hash_seed() -> None:
    # set iteration order of strings changes with PYTHONHASHSEED; a set in the sr path would show here
    code = (
        "from lmforge.data.augment import EDAConfig, augment_examples\n"
        f"print(augment_examples([{SENTENCE!r}, 'good good food , bad service'], [0, 1], EDAConfig(n_aug=16), 5))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("0", "1", "12345")
    }
    assert len(runs) == 1


# --- the four operations --------------------------------------------------------------------------
def test_rd_with_alpha_1_keeps_one_random_word() -> None:
    words = LONG.split()
    kept = []
    for seed in SEEDS:
        for out in eda(LONG, only("rd", alpha=1.0), random.Random(seed)):
            assert out and out in words  # one whole word, never an empty string
            kept.append(out)
    assert len(set(kept)) > 10  # a random word, not always the first or last


def test_rd_deletes_each_word_with_probability_alpha() -> None:
    words = LONG.split()
    outs = eda(LONG, only("rd", alpha=0.25, n_aug=200), random.Random(0))
    for out in outs:
        assert is_subsequence(out.split(), words)  # deletion only: the rest stays in order
    kept = sum(len(out.split()) for out in outs) / (200 * len(words))
    assert kept == pytest.approx(0.75, abs=0.03)  # 8,000 draws: one standard deviation is 0.005


def test_rs_keeps_the_multiset_of_words() -> None:
    words = SENTENCE.split()
    outs = [out for seed in SEEDS for out in eda(SENTENCE, only("rs"), random.Random(seed))]
    for out in outs:
        assert Counter(out.split()) == Counter(words)
        assert sum(a != b for a, b in zip(out.split(), words)) <= 4  # n = 2 swaps move at most 4 words
    assert any(out != SENTENCE for out in outs)


def test_rs_swaps_two_different_positions() -> None:
    for seed in SEEDS:  # one swap of a two-word sentence always changes it (the reference gives up after 3 tries)
        assert eda("good movie", only("rs", n_aug=3), random.Random(seed)) == ["movie good"] * 3


def test_sr_replaces_only_non_stop_words_with_synonyms_from_the_table() -> None:
    words = SENTENCE.split()
    outs = [out for seed in SEEDS for out in eda(SENTENCE, only("sr"), random.Random(seed))]
    for out in outs:
        new = out.split()
        assert len(new) == len(words)  # the table's synonyms are single words
        replaced = {(a.lower(), b.lower()) for a, b in zip(words, new) if a != b}
        assert len({a for a, _ in replaced}) == 2  # n = round(0.1 * 20) distinct words
        for a, b in replaced:
            assert a not in STOP_WORDS and b in ENGLISH_SYNONYMS[a]
    assert len(set(outs)) > 10


def test_sr_replaces_every_occurrence_of_a_word_alike() -> None:
    synonyms = {"good": ["fine", "nice", "great"]}
    for seed in SEEDS:
        (out,) = eda("good food , good service", only("sr", n_aug=1), random.Random(seed), synonyms=synonyms)
        a, _, _, b, _ = out.split()
        assert a == b and a in synonyms["good"]


def test_sr_keeps_punctuation_and_capitalisation() -> None:
    synonyms = {"good": ["fine"], "great": ["superb"], "movie": ["film"]}
    (out,) = eda("Good, (GREAT) movie!", only("sr", alpha=1.0, n_aug=1), random.Random(0), synonyms=synonyms)
    assert out == "Fine, (SUPERB) film!"


def test_stop_words_are_never_replaced_even_when_the_table_lists_them() -> None:
    sentence = "it is not what they should have"  # all seven are stop words
    synonyms = {w: ["zzz"] for w in STOP_WORDS}
    for seed in SEEDS:
        outs = eda(sentence, EDAConfig(alpha=1.0, ops=("sr", "ri")), random.Random(seed), synonyms=synonyms)
        assert outs == [sentence] * 4


def test_sr_and_ri_without_synonyms_return_the_sentence_as_is() -> None:
    outs = eda(SENTENCE, EDAConfig(n_aug=6, ops=("sr", "ri")), random.Random(0), synonyms={})
    assert outs == [SENTENCE] * 6  # still n_aug copies, as the reference code returns them
    assert eda(LONG, only("sr"), random.Random(0)) == [LONG] * 4  # no word of LONG is in the built-in table


def test_ri_inserts_n_synonyms_of_non_stop_words() -> None:
    words = SENTENCE.split()
    allowed = {s for w in words if w.lower() not in STOP_WORDS for s in ENGLISH_SYNONYMS.get(w.lower(), ())}
    outs = [out for seed in SEEDS for out in eda(SENTENCE, only("ri"), random.Random(seed))]
    for out in outs:
        new = out.split()
        assert is_subsequence(words, new)  # the original words stay, in order
        added = Counter(new) - Counter(words)
        assert sum(added.values()) == 2 and set(added) <= allowed
    assert len(set(outs)) > 10


def test_empty_or_blank_sentence_gives_no_copies() -> None:
    for sentence in ("", "   ", "\n\t "):
        assert eda(sentence, EDAConfig(), random.Random(0)) == []


def test_each_op_gets_an_equal_share() -> None:
    # sr and ri are no-ops without synonyms and rs changes LONG every time, so rs's share is visible
    changed = [
        out != LONG
        for seed in SEEDS
        for out in eda(LONG, EDAConfig(n_aug=4, ops=("sr", "ri", "rs")), random.Random(seed), synonyms={})
    ]
    # 3 ops cycled over 4 copies: rs is used once or twice per sentence, never zero or four times
    per_sentence = [sum(changed[i : i + 4]) for i in range(0, len(changed), 4)]
    assert set(per_sentence) == {1, 2}


# --- Chinese and mixed text -----------------------------------------------------------------------
def test_chinese_rs_keeps_the_characters() -> None:
    outs = [out for seed in SEEDS for out in eda(ZH, only("rs", alpha=0.2), random.Random(seed))]
    for out in outs:
        assert " " not in out and sorted(out) == sorted(ZH)
    assert any(out != ZH for out in outs)


def test_chinese_rd_deletes_characters_and_joins_without_spaces() -> None:
    for seed in SEEDS:
        for out in eda(ZH, only("rd", alpha=0.3), random.Random(seed)):
            assert out and " " not in out and is_subsequence(list(out), list(ZH))


def test_chinese_sr_needs_the_callers_synonyms() -> None:
    assert eda(ZH, only("sr", n_aug=2), random.Random(0)) == [ZH, ZH]  # the English table has no CJK entries
    synonyms = {"好": ["棒"], "快": ["迅速"]}
    (out,) = eda(ZH, only("sr", alpha=1.0, n_aug=1), random.Random(0), synonyms=synonyms)
    assert out == ZH.replace("好", "棒").replace("快", "迅速")


def test_mixed_text_keeps_a_space_only_between_cjk_and_other_words() -> None:
    sentence = "我用 Python 写代码 ，很 fun"
    for seed in SEEDS:
        for out in eda(sentence, only("rs", alpha=0.5), random.Random(seed)):
            assert sorted(out.replace(" ", "")) == sorted(sentence.replace(" ", ""))
            assert not CJK_SPACE_CJK.search(out)  # every space has a non-CJK word on at least one side
            assert len(re.findall(r"Python|fun", out)) == 2


# --- augment_examples -----------------------------------------------------------------------------
def test_augment_examples_puts_originals_first_and_keeps_labels_aligned() -> None:
    texts = ["a good movie", "", "terrible plot , boring actors", "   ", "what fun"]
    labels = [1, 0, 0, 1, 1]
    pairs = ["p0", "p1", "p2", "p3", "p4"]
    out_texts, out_labels, out_pairs = augment_examples(texts, labels, EDAConfig(n_aug=3), seed=0, text_pairs=pairs)
    assert len(out_texts) == len(out_labels) == len(out_pairs) == 5 * (1 + 3) - 2 * 3  # two blanks get no copies
    assert out_texts[:5] == texts and out_labels[:5] == labels and out_pairs[:5] == pairs
    assert out_labels[5:] == [1] * 3 + [0] * 3 + [1] * 3  # copies of texts 0, 2, 4, grouped
    assert out_pairs[5:] == ["p0"] * 3 + ["p2"] * 3 + ["p4"] * 3  # the second text is never augmented
    for copy, source in zip(
        out_texts[5:], ["a good movie"] * 3 + ["terrible plot , boring actors"] * 3 + ["what fun"] * 3
    ):
        assert copy and set(copy.split()) & set(source.split())  # a copy of its own source, not a neighbour's
    assert augment_examples(texts, labels, EDAConfig(n_aug=3), seed=0)[2] is None


def test_augment_examples_copies_depend_only_on_seed_position_and_text() -> None:
    cfg = EDAConfig(n_aug=5)
    one = augment_examples([SENTENCE], [1], cfg, seed=9)[0]
    two = augment_examples([SENTENCE, "a dull , lazy film"], [1, 0], cfg, seed=9)[0]
    assert two[2 : 2 + 5] == one[1:]  # appending an example leaves the earlier copies as they were
    a = augment_examples(["a dull , lazy film", SENTENCE], [0, 1], cfg, seed=9)[0]
    b = augment_examples(["a fun , clever movie with a great cast", SENTENCE], [1, 1], cfg, seed=9)[0]
    assert a[2 + 5 :] == b[2 + 5 :]  # a different text before it does not shift SENTENCE's copies
    twice = augment_examples([SENTENCE, SENTENCE], [1, 1], cfg, seed=9)[0]
    assert twice[2 : 2 + 5] != twice[2 + 5 :]  # but a duplicate at another position gets other copies


def test_augment_examples_rejects_misaligned_input() -> None:
    with pytest.raises(DataError, match=r"len\(labels\)=1 but len\(texts\)=2"):
        augment_examples(["a", "b"], [0], EDAConfig(), seed=0)
    with pytest.raises(DataError, match=r"len\(text_pairs\)=3 but len\(texts\)=2"):
        augment_examples(["a", "b"], [0, 1], EDAConfig(), seed=0, text_pairs=["x", "y", "z"])
    with pytest.raises(DataError, match=r"texts\[1\] is a list"):
        augment_examples(["a", ["b", "c"]], [0, 1], EDAConfig(), seed=0)  # type: ignore[list-item]


# --- config ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"alpha": 0}, "EDAConfig.alpha=0 "),
        ({"alpha": 1.5}, "EDAConfig.alpha=1.5 "),
        ({"alpha": float("nan")}, "EDAConfig.alpha=nan "),
        ({"alpha": "0.1"}, "EDAConfig.alpha='0.1' "),
        ({"n_aug": 0}, "EDAConfig.n_aug=0 "),
        ({"n_aug": 2.0}, "EDAConfig.n_aug=2.0 "),
        ({"ops": ()}, "EDAConfig.ops=() "),
        ({"ops": ("sr", "swap")}, "['swap']"),
        ({"ops": "sr"}, "EDAConfig.ops='sr' "),
    ],
)
def test_config_errors_name_the_field_and_value(kwargs: dict, named: str) -> None:
    with pytest.raises(ConfigError) as e:
        EDAConfig(**kwargs)
    assert named in str(e.value)


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        EDAConfig(alpha=-1, n_aug=0)
    assert "EDAConfig.alpha=-1" in str(e.value) and "EDAConfig.n_aug=0" in str(e.value)


def test_config_accepts_the_edges_and_a_yaml_list() -> None:
    assert EDAConfig(alpha=1, n_aug=1).alpha == 1
    assert EDAConfig(ops=["rd", "sr"]).ops == ("rd", "sr")  # type: ignore[arg-type]
    assert EDAConfig().ops == OPS


def test_recommended_follows_table_3() -> None:
    got = {n: (c.alpha, c.n_aug) for n in (100, 500, 2_000, 5_000, 10**6) for c in [EDAConfig.recommended(n)]}
    assert got == {100: (0.05, 16), 500: (0.05, 16), 2_000: (0.05, 8), 5_000: (0.1, 4), 10**6: (0.1, 4)}


# --- the synonym table, and real data ---------------------------------------------------------------
def test_synonym_table_holds_usable_single_words() -> None:
    assert 150 <= len(ENGLISH_SYNONYMS) <= 300
    for word, synonyms in ENGLISH_SYNONYMS.items():
        assert word.isalpha() and word.islower() and word not in STOP_WORDS, word
        assert synonyms and len(set(synonyms)) == len(synonyms), word
        for s in synonyms:
            assert s.isalpha() and s.islower() and s != word and s not in STOP_WORDS, (word, s)


def test_sst2_sentences_mostly_get_a_synonym(shared_data: Path) -> None:
    d = read_task_file(shared_data / "sst2" / "dev.tsv", "classification", "sentence", "label")
    texts = [t for t in d.texts if len(t.split()) >= 8]
    cfg = only("sr", n_aug=1)
    changed = sum(eda(t, cfg, random.Random(i)) != [t] for i, t in enumerate(texts))
    assert changed / len(texts) > 0.6  # 75% when written: the table covers common review words


def test_waimai_reviews_keep_their_characters_under_rs_and_rd(shared_data: Path) -> None:
    d = read_task_file(shared_data / "waimai10k" / "waimai_10k.csv", "classification", "review", "label")
    texts = d.texts[:300]
    out_texts, out_labels, _ = augment_examples(texts, d.labels[:300], EDAConfig(ops=("rs", "rd")), seed=0)
    assert len(out_texts) == 300 * 5 and out_labels[300:] == [y for y in d.labels[:300] for _ in range(4)]
    copies = iter(out_texts[300:])
    for text in texts:
        chars = "".join(text.split())
        for _ in range(4):
            copy = "".join(next(copies).split())
            assert copy  # rd keeps one character at least
            assert Counter(copy) <= Counter(chars)  # rs moves characters, rd drops some; none is made up
