import json

import pytest

from textrlhf.prompts import load_prompts


def test_bundled_set_has_at_least_300_varied_prompts():
    every = load_prompts("bundled:all", split="all")
    assert len(every) >= 300 and len(set(every)) == len(every)
    reviews_train = load_prompts("bundled:reviews")
    reviews_test = load_prompts("bundled:reviews", split="test")
    instructions = load_prompts("bundled:instructions", split="all")
    assert reviews_train and reviews_test and instructions
    assert not set(reviews_train) & set(reviews_test)  # held-out prompts stay held out
    assert len(reviews_train) + len(reviews_test) + len(instructions) == len(every)


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "txt"])
def test_local_files(tmp_path, suffix):
    rows = ["first prompt", "second, with a comma", "third"]
    path = tmp_path / f"p.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    elif suffix == "json":
        path.write_text(json.dumps([{"text": r} for r in rows]))
    elif suffix == "csv":
        path.write_text("text\n" + "".join(f'"{r}"\n' for r in rows))
    else:
        path.write_text("\n".join(rows) + "\n")
    assert load_prompts(str(path), column="text") == rows


def test_split_column_in_a_local_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a", "split": "train"}\n{"prompt": "b", "split": "test"}\n')
    assert load_prompts(str(path)) == ["a"]
    assert load_prompts(str(path), split="test") == ["b"]
    assert load_prompts(str(path), split="all") == ["a", "b"]


def test_list_and_max_prompts():
    assert load_prompts(["a", "b", "c"], max_prompts=2) == ["a", "b"]


def test_empty_source_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts([])
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ValueError, match="empty.txt"):
        load_prompts(str(path))


def test_empty_prompt_raises_naming_its_index():
    with pytest.raises(ValueError, match="prompt 1 "):
        load_prompts(["fine", "   ", "fine too"])


def test_non_string_prompt_raises():
    with pytest.raises(TypeError, match="prompt 0"):
        load_prompts([3])


def test_missing_column_lists_the_available_ones(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "a"}\n')
    with pytest.raises(KeyError, match=r"available: \['text'\]"):
        load_prompts(str(path))


def test_missing_file_and_unknown_bundled_set():
    with pytest.raises(FileNotFoundError):
        load_prompts("no/such/file.jsonl")
    with pytest.raises(ValueError, match="bundled:reviews"):
        load_prompts("bundled:poems")


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_corrupt_json_names_the_file_and_line(tmp_path, suffix):
    path = tmp_path / f"bad.{suffix}"
    if suffix == "jsonl":
        path.write_text('{"prompt": "a"}\n{"prompt": "b"\n{"prompt": "c"}\n')
    else:
        path.write_text('[\n  {"prompt": "a"},\n  {"prompt": b}\n]\n')  # line 3: an unquoted string
    with pytest.raises(ValueError, match=rf"bad\.{suffix}.* line {2 if suffix == 'jsonl' else 3}\b"):
        load_prompts(str(path))


@pytest.mark.parametrize("suffix", ["txt", "jsonl", "csv"])
def test_non_utf8_file_names_the_file_line_and_fix(tmp_path, suffix):
    path = tmp_path / f"latin.{suffix}"
    lines = {
        "txt": ["first", "café au lait"],
        "jsonl": ['{"prompt": "first"}', '{"prompt": "café"}'],
        "csv": ["prompt", "café"],
    }[suffix]
    path.write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=rf"latin\.{suffix}.* line 2 is not UTF-8.*iconv"):
        load_prompts(str(path))
