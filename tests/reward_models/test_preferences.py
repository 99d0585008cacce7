"""Preference data: the hh-rlhf splitter, local files, and every bad-row case."""

from __future__ import annotations

import json

import pytest

from reward_models.preferences import (
    PreferencePair,
    load_preferences,
    pairs_from_rows,
    save_preferences,
    split_by_prompt,
    split_hh_dialogue,
)

HH_ROWS = [
    {
        "chosen": "\n\nHuman: What is a good movie?\n\nAssistant: Try Casablanca, a classic.",
        "rejected": "\n\nHuman: What is a good movie?\n\nAssistant: I don't know.",
    },
    {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke"
        "\n\nAssistant: Why did the chicken cross the road?",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No.",
    },
]


def test_hh_splitter_on_hand_written_rows():
    pairs = pairs_from_rows(HH_ROWS)
    assert pairs[0] == PreferencePair(
        "\n\nHuman: What is a good movie?\n\nAssistant:", "Try Casablanca, a classic.", "I don't know."
    )
    # Multi-turn: the prompt keeps the earlier assistant turn, only the final reply is the response.
    assert pairs[1].prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant:"
    assert (pairs[1].chosen, pairs[1].rejected) == ("Why did the chicken cross the road?", "No.")
    assert split_hh_dialogue("\n\nHuman: x\n\nAssistant: y") == ("\n\nHuman: x\n\nAssistant:", "y")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_files_explicit_and_hh_schema(tmp_path):
    rows = [
        {"prompt": "p1", "chosen": "good", "rejected": "bad", "extra": 1},
        {"prompt": "p2", "chosen": "nice", "rejected": "mean", "extra": 2},
    ]
    pairs = load_preferences(_write_jsonl(tmp_path / "a.jsonl", rows))
    assert pairs == [PreferencePair("p1", "good", "bad"), PreferencePair("p2", "nice", "mean")]
    (tmp_path / "a.csv").write_text("prompt,chosen,rejected\np1,good,bad\np2,nice,mean\n")
    assert load_preferences(tmp_path / "a.csv") == pairs
    hh = load_preferences(_write_jsonl(tmp_path / "hh.jsonl", HH_ROWS))
    assert hh == pairs_from_rows(HH_ROWS)
    save_preferences(pairs, tmp_path / "out.jsonl")
    assert load_preferences(tmp_path / "out.jsonl", limit=1) == pairs[:1]


@pytest.mark.parametrize(
    "rows, match",
    [
        (
            [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "", "rejected": "b"}],
            r"row 1: the 'chosen' response is empty",
        ),
        ([{"prompt": "p", "chosen": "a", "rejected": "   "}], r"row 0: the 'rejected' response is empty"),
        ([{"prompt": "p", "chosen": "same", "rejected": "same"}], r"row 0: 'chosen' and 'rejected' are identical"),
        ([{"prompt": "p", "chosen": "a"}], r"row 0 lacks column\(s\) \['rejected'\]"),
        ([{"prompt": "p", "chosen": "a", "rejected": None}], r"row 0: the 'rejected' response is empty"),
        ([{"prompt": "p", "chosen": 3, "rejected": "b"}], r"row 0: column 'chosen' must be text"),
        ([{"prompt": "p", "chosen": "a", "rejected": "b", "margin": float("nan")}], r"row 0: 'margin'"),
        (
            [HH_ROWS[0], {"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: B\n\nAssistant: y"}],
            r"row 1: the 'chosen' and 'rejected' dialogues differ",
        ),
        ([{"chosen": "no turns here", "rejected": "\n\nHuman: A\n\nAssistant: y"}], r"row 0 \(chosen\) has no"),
        (
            [{"chosen": "\n\nHuman: A\n\nAssistant: x", "rejected": "\n\nHuman: A\n\nAssistant: x"}],
            r"row 0: 'chosen' and 'rejected' are identical",
        ),
        (
            [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": "b"}],
            r"row 1 lacks a 'prompt'",
        ),
        ([], r"no preference rows"),
    ],
)
def test_bad_rows_raise_naming_the_row(rows, match):
    with pytest.raises(ValueError, match=match):
        pairs_from_rows(rows)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_preferences(tmp_path / "missing.jsonl")
    (tmp_path / "b.csv").write_text("prompt,chosen\np,a\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['rejected'\]"):
        load_preferences(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("prompt,chosen,rejected\np,a,b\nq,,b\n")
    with pytest.raises(ValueError, match=r"row 1: the 'chosen' response is empty"):
        load_preferences(tmp_path / "c.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match=r"\.jsonl, \.json or \.csv"):
        load_preferences(tmp_path / "d.txt")


def test_split_by_prompt_keeps_prompts_apart():
    pairs = [PreferencePair(f"p{i % 10}", f"c{i}", f"r{i}") for i in range(50)]
    train, held = split_by_prompt(pairs, 0.2, seed=0)
    assert len(train) + len(held) == 50 and held
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_by_prompt(pairs, 0.2, seed=0) == (train, held)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_prompt(pairs, 1.0)
