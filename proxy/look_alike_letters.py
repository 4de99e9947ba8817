"""Letters that show as an ASCII letter beyond NFKC's forms and the common Cyrillic and Greek
look-alikes (``proxy.letter_forms``): review r2, a clearly harmful reply written with them read
0.02-0.20 where it read 0.56 plain, each a word the judge's tokenizer knows as nothing.

- ``LATIN_VARIANTS``: Latin letters that are a base letter drawn otherwise, with no canonical
  decomposition (so the tokenizer's accent stripping leaves them): the dotless ``ı`` and ``ȷ``,
  ``ɑ`` (alpha), ``ɡ`` (script g), ``ɩ`` (iota), and the letters "WITH STROKE", "HOOK", "BAR",
  "TAIL"... (``ø ł đ ħ ŧ ƒ ɓ``), found by their Unicode names at import (about 280; bounded by
  ``_LATIN_RANGES``). Read as their base letter wherever they are (``compat_read``): in Danish,
  Polish or Turkish text that is what the tokenizer does to their accented letters already.
- ``SCRIPT_LOOK_ALIKES``: letters of other scripts that show as a Latin letter (Unicode's
  confusables.txt, the clear ones): Armenian ``օ ս հ ո``, Greek ``ϲ ϳ``, Cyrillic ``ү ѵ``,
  Cherokee and Lisu capitals (and Cherokee small letters, shown as small capitals). Read as
  Latin where the Cyrillic and Greek look-alikes are (``latin_read``: in a word with an ASCII
  letter, or on a line that reads as Latin), so Armenian, Cherokee or Lisu text, whose lines
  hold letters that look like no Latin one (``FOREIGN_SCRIPTS``), reads as written.
"""

from __future__ import annotations

import re
import unicodedata

_LATIN_RANGES = [(0x80, 0x2B0), (0x1D00, 0x1DC0), (0x1E00, 0x1F00), (0x2C60, 0x2C80),
                 (0xA720, 0xA800), (0xAB30, 0xAB70)]
"""Latin-1 Supplement to IPA, phonetic extensions, Latin Extended Additional, C, D and E."""
LATIN_VARIANT_RANGES = [(0x1EFE, 0x1F00), (0x2C60, 0x2C80), (0xAB30, 0xAB70)]
"""Those of ``_LATIN_RANGES`` with a variant that ``letter_forms``'s ranges lack."""
_VARIANT_NAME = re.compile(r"LATIN (SMALL|CAPITAL) LETTER (?:DOTLESS |SCRIPT )?"
                           r"([A-Z]|ALPHA|IOTA)(?: WITH .+)?")
"""A Latin letter drawn otherwise: a base letter, dotless or script, or with a stroke, hook,
bar, tail... (not "TURNED", "REVERSED", "OPEN", "CLOSED" or ligatures: other shapes)."""
_NAMED_BASE = {"ALPHA": "A", "IOTA": "I"}


def _latin_variants() -> dict[int, str]:
    """Each letter of ``_LATIN_RANGES`` named as a drawn base letter (``_VARIANT_NAME``), with
    no decomposition, to that letter in its case."""
    table: dict[int, str] = {}
    for start, stop in _LATIN_RANGES:
        for code in range(start, stop):
            char = chr(code)
            named = _VARIANT_NAME.fullmatch(unicodedata.name(char, ""))
            if named and not unicodedata.decomposition(char):
                letter = _NAMED_BASE.get(named.group(2), named.group(2))
                table[code] = letter.lower() if named.group(1) == "SMALL" else letter
    return table


LATIN_VARIANTS = _latin_variants()

_CHEROKEE = ("ᎪᏴᏟᎠᎬᏀᎻᏆᎫᏦᏞᎷᏁᎾᏢᎡᏚᎢᏙᏔᏃ\u13a5\u13a9\u13d2\u13b3", "ABCDEGHIJKLMNOPRSTVWZIYRW")
_LISU = ("ꓮꓐꓚꓓꓰꓝꓖꓧꓲꓙꓗꓡꓟꓠꓳꓑꓣꓢꓔꓴꓦꓪꓫꓬꓜ", "ABCDEFGHIJKLMNOPRSTUVWXYZ")
_OTHERS = ("օսհոցզՕՍՏԼϲϹϳүҮѵѴѡҽ", "ouhngqOUSLcCjyYvVwe")
"""Armenian, Greek and Cyrillic letters confusables.txt gives as a Latin one."""


def _script_look_alikes() -> dict[int, int]:
    table: dict[int, int] = {}
    for letters, latin in (_CHEROKEE, _LISU, _OTHERS):
        table.update(str.maketrans(letters, latin))
    for letter, latin in zip(*_CHEROKEE, strict=True):  # small letters: small capitals
        table.setdefault(ord(letter.lower()), ord(latin.lower()))
    return table


SCRIPT_LOOK_ALIKES = _script_look_alikes()
FOREIGN_SCRIPTS = "\u0531-\u0587\u13a0-\u13fd\ua4d0-\ua4fd\uab70-\uabbf"
"""Armenian, Cherokee and Lisu letters: a line with one that looks like no Latin letter (and
no ASCII letter) is text of that script (``letter_forms._FOREIGN``)."""
