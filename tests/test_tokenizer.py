"""Byte tokenizer: ids, round trip, truncation, padding, packing."""
import numpy as np
import pytest

from maskssl.data import tokenizer as T


def test_special_ids_and_vocab():
  assert (T.PAD, T.BOS, T.EOS, T.MASK, T.CLS, T.SEP) == (0, 1, 2, 3, 4, 5)
  assert T.VOCAB_SIZE == 262
  assert T.encode_ids("") == [T.SEP]
  assert T.encode_ids("A") == [ord("A") + 6, T.SEP]
  assert T.encode_ids(b"\x00\xff") == [6, 261, T.SEP]


@pytest.mark.parametrize("text", ["CC(=O)Oc1ccccc1C(=O)O", "MKTAYIAK",
                                  "héllo ✓", "[Na+].[Cl-]", ""])
def test_round_trip(text):
  ids = T.encode_ids(text)
  assert ids[-1] == T.SEP and T.SEP not in ids[:-1]
  assert len(ids) == len(text.encode("utf-8")) + 1
  assert T.decode(ids) == text
  assert T.decode(ids + [T.PAD] * 3, stop_at_sep=True) == text


def test_encode_pads_right_and_truncates():
  tokens, valid = T.encode(["abc", "abcdefgh"], max_len=5)
  assert tokens.shape == (2, 5) and tokens.dtype == np.int32
  np.testing.assert_array_equal(tokens[0], [97 + 6, 98 + 6, 99 + 6, T.SEP, 0])
  # truncation keeps the first max_len - 1 bytes, then SEP
  np.testing.assert_array_equal(tokens[1], [103, 104, 105, 106, T.SEP])
  np.testing.assert_array_equal(valid.sum(1), [4, 5])
  for row in valid:   # right padding: valid is a prefix
    assert not row[np.argmin(row):].any() or row.all()
  assert T.decode(tokens[1]) == "abcd"


def test_decode_special_and_range():
  assert T.decode([T.CLS, 71, T.SEP], keep_special=True) == "<cls>A<sep>"
  with pytest.raises(ValueError):
    T.decode([262])
  with pytest.raises(ValueError):
    T.encode_ids("x", max_len=0)


def test_pack_respects_max_len_and_separators():
  texts = ["C" * 5, "CC", "O" * 7, "N", "S" * 20, "c1ccccc1"]
  tokens, valid = T.pack(texts, max_len=10)
  assert tokens.shape[1] == 10
  # every string (truncated to 9 bytes) appears once, in order, never split
  parts = [p for row in tokens for p in T.split_rows(row)]
  assert parts == ["C" * 5, "CC", "O" * 7, "N", "S" * 9, "c1ccccc1"]
  # rows: [C5 SEP CC SEP] (9) | [O7 SEP N SEP] (10) | [S9 SEP] | [c1ccccc1 SEP]
  np.testing.assert_array_equal(valid.sum(1), [9, 10, 10, 9])
  for row, v in zip(tokens, valid):
    n = v.sum()
    assert v[:n].all() and not v[n:].any()       # right padded
    assert row[n - 1] == T.SEP                   # every row ends with SEP
    assert (row[n:] == T.PAD).all()
  # packing uses fewer rows than one string per row
  assert len(tokens) < len(texts)
