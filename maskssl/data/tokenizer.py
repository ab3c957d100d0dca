"""Byte-level tokenizer of SMA (spec §2.1): 262 ids, no vocabulary.

Ids: ``PAD=0, BOS=1, EOS=2, MASK=3, CLS=4, SEP=5``; byte value ``b`` maps to
``b + 6``. A string is encoded as its UTF-8 bytes followed by one ``SEP``
(no CLS/BOS), right-padded with ``PAD`` to ``max_len``; truncation keeps the
first ``max_len - 1`` bytes, then ``SEP``. ``valid`` is True for real tokens
(bytes and SEP) and False for padding; padding is always on the right.

:func:`pack` concatenates consecutive encoded strings (each ending in SEP)
into rows of at most ``max_len`` tokens (``merge_method=sep`` of the
reference chemistry pretraining); a string never straddles two rows and a
string longer than a row is truncated on its own row.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

PAD, BOS, EOS, MASK, CLS, SEP = 0, 1, 2, 3, 4, 5
NUM_SPECIAL = 6
VOCAB_SIZE = NUM_SPECIAL + 256
SPECIAL_NAMES = ("<pad>", "<bos>", "<eos>", "<mask>", "<cls>", "<sep>")


def encode_ids(text: str | bytes, max_len: int | None = None) -> list[int]:
  """Ids of one string: bytes + 6, then SEP; truncated to ``max_len``."""
  data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  if max_len is not None:
    if max_len < 1:
      raise ValueError(f"max_len must be >= 1, got {max_len}")
    data = data[:max_len - 1]
  return [b + NUM_SPECIAL for b in data] + [SEP]


def encode(texts: Sequence[str | bytes], max_len: int
           ) -> tuple[np.ndarray, np.ndarray]:
  """``(tokens (B, max_len) int32, valid (B, max_len) bool)``, right-padded."""
  tokens = np.full((len(texts), max_len), PAD, np.int32)
  for i, t in enumerate(texts):
    ids = encode_ids(t, max_len)
    tokens[i, :len(ids)] = ids
  return tokens, tokens != PAD


def decode(ids: Iterable[int], stop_at_sep: bool = False,
           keep_special: bool = False) -> str:
  """Inverse of :func:`encode_ids`: PAD is dropped, SEP ends the string
  when ``stop_at_sep`` (else it is dropped, or shown when ``keep_special``);
  invalid UTF-8 is replaced (U+FFFD)."""
  out = bytearray()
  pieces = []
  for i in ids:
    i = int(i)
    if i >= NUM_SPECIAL:
      if i >= VOCAB_SIZE:
        raise ValueError(f"token id {i} out of range [0, {VOCAB_SIZE})")
      out.append(i - NUM_SPECIAL)
      continue
    if i < 0:
      raise ValueError(f"token id {i} out of range [0, {VOCAB_SIZE})")
    if i == SEP and stop_at_sep:
      break
    if keep_special and i != PAD:
      pieces.append(out.decode("utf-8", errors="replace") + SPECIAL_NAMES[i])
      out = bytearray()
  pieces.append(out.decode("utf-8", errors="replace"))
  return "".join(pieces)


def split_rows(tokens: np.ndarray) -> list[str]:
  """The strings of a packed row (split at SEP, padding dropped)."""
  parts, cur = [], []
  for i in np.asarray(tokens).tolist():
    if i == SEP:
      parts.append(decode(cur))
      cur = []
    elif i != PAD:
      cur.append(i)
  if cur:
    parts.append(decode(cur))
  return parts


def pack(texts: Sequence[str | bytes], max_len: int
         ) -> tuple[np.ndarray, np.ndarray]:
  """Greedy packing: consecutive strings (each + SEP) fill a row of at most
  ``max_len`` tokens; the row is right-padded. Returns ``(tokens, valid)``
  of shape ``(rows, max_len)``."""
  rows: list[list[int]] = []
  cur: list[int] = []
  for t in texts:
    ids = encode_ids(t, max_len)
    if cur and len(cur) + len(ids) > max_len:
      rows.append(cur)
      cur = []
    cur = cur + ids
  if cur:
    rows.append(cur)
  tokens = np.full((len(rows), max_len), PAD, np.int32)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  return tokens, tokens != PAD
