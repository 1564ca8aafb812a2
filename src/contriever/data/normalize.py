"""Text options of the paper's code: `normalize_text` (its character table) and lowercasing.

mContriever's data and evaluation text went through both (its README: `--normalize_text` when
preparing the training data, `--lowercase --normalize_text` when encoding passages and questions):
the table maps characters that are rare or missing in mBERT's vocabulary to common ASCII ones.
`normalize_text(text)` follows the released table exactly:

- deleted: the C0 controls U+0001-U+0008, U+000E, U+000F, U+0011-U+001B, and the soft hyphen U+00AD;
- to a space: U+000B (line tabulation), U+000C (form feed), U+0085 (next line);
- to `-`: hyphens and dashes U+2010-U+2015, the hyphen bullet U+2043, minus signs U+2212, U+FF0D, U+207B;
- to `"`: U+201C-U+201F;
- to `'`: U+2018, U+2019, U+201A, U+201B, U+055A, U+A78B, U+A78C, U+FF07, the accents U+0060 and
  U+00B4, and the primes U+2032 and U+2035;
- to `''`, `'''`, `''''`: the double primes U+2033, U+2036; triple primes U+2034, U+2037; the
  quadruple prime U+2057;
- to `...`: the ellipsis U+2026; then `" . . . "` becomes `" ... "`;
- to `/`: the fraction slash U+2044 and the division slash U+2215.

Not changed, as in the released code: tildes (that part of its table is commented out), plus
signs, and every other character. `lowercase` is Python's `str.lower`, as there; the two commute.
"""

from __future__ import annotations

_DELETED = [*range(0x01, 0x09), 0x0E, 0x0F, *range(0x11, 0x1C), 0x00AD]
_REPLACED = {
    " ": [0x0B, 0x0C, 0x85],
    "-": [*range(0x2010, 0x2016), 0x2043, 0x2212, 0xFF0D, 0x207B],
    '"': [0x201C, 0x201D, 0x201E, 0x201F],
    "'": [0x2018, 0x2019, 0x201A, 0x201B, 0x055A, 0xA78B, 0xA78C, 0xFF07, 0x60, 0xB4, 0x2032, 0x2035],
    "''": [0x2033, 0x2036],
    "'''": [0x2034, 0x2037],
    "''''": [0x2057],
    "...": [0x2026],
    "/": [0x2044, 0x2215],
}
NORMALIZE_TABLE: dict[int, str | None] = {code: None for code in _DELETED}
NORMALIZE_TABLE.update({code: target for target, codes in _REPLACED.items() for code in codes})


def normalize_text(text: str) -> str:
    """The paper code's `normalize_text` (see the module doc)."""
    return text.translate(NORMALIZE_TABLE).replace(" . . . ", " ... ")


def transform_text(text: str, *, lowercase: bool = False, normalize: bool = False) -> str:
    """`normalize_text` then lowercase, each when asked (the identity when neither is)."""
    if normalize:
        text = normalize_text(text)
    return text.lower() if lowercase else text
