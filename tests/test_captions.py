"""Caption reading rule and the original normalisation."""

from __future__ import annotations

import pytest

from workflow_scripts.misalign.captions import normalise, normalise_all, read_captions
from workflow_scripts.common.errors import InputError


def test_lines_kept_verbatim_crlf_and_missing_final_newline(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("A Dog, running!\r\n  two  spaces kept \nlast line without newline".encode())
    assert read_captions(path) == ["A Dog, running!", "  two  spaces kept ", "last line without newline"]


def test_trailing_newline_adds_no_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    assert read_captions(path) == ["one", "two"]


@pytest.mark.parametrize("raw,line", [(b"ok\n\nnext\n", 2), (b"ok\n   \t\nnext\n", 2), (b"ok\nfine\n\n\n", 3)])
def test_empty_lines_are_errors_with_line_number(tmp_path, raw, line):
    path = tmp_path / "c.txt"
    path.write_bytes(raw)
    with pytest.raises(InputError, match=rf"c\.txt:{line}: empty line"):
        read_captions(path)


def test_bad_utf8_is_an_error_with_line_number(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"good\nalso good\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"c\.txt:3: not valid UTF-8"):
        read_captions(path)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(InputError, match="no captions"):
        read_captions(tmp_path / "empty.txt")
    with pytest.raises(InputError, match="not found"):
        read_captions(tmp_path / "missing.txt")


def test_normalise_matches_the_original_steps():
    import re

    def original(t):  # docs/original_code.md, "Exp 3, stage 1", written out step by step
        t = t.lower()
        t = re.sub(r"[^\w\s]", " ", t)
        t = re.sub(r"\s+", " ", t)
        return t.strip()

    samples = ["A Dog's toy -- RED & blue!!", "  Café   au lait\tnoir ", "x_y=z (w)", "ÉCOLE—Über"]
    assert normalise_all(samples) == [original(s) for s in samples]
    assert normalise("A Dog's toy -- RED & blue!!") == "a dog s toy red blue"
    assert normalise("x_y=z (w)") == "x_y z w"  # '_' is a word character
