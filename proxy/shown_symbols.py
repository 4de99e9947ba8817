"""Symbols a reader reads as the letters they hold, or as a space, for the judge
(``proxy.shown_text``): review r2, a clearly harmful reply so written read 0.01-0.03 where it
read 0.56 plain, since the judge's tokenizer reads each such word as one unknown token.

- Enclosing combining marks (category Me: the keycap ``U+20E3``, the enclosing circle, square
  and diamond ``U+20DD-20E0``, ``U+20E2-20E4``, Cyrillic ``U+0488-0489``, ``U+A670-A672``,
  ``U+1ABE``) draw a frame around the character before them: ``G⃣r⃣a⃣b⃣`` reads "Grab", the
  keycap emoji ``1️⃣`` reads "1". Dropped.
- Regional indicator letters (``U+1F1E6-1F1FF``) show as a flag only in a pair, left to right
  in a run of them, that names a region (``_REGIONS``, ISO 3166-1); any other shows its letter
  in a box (one alone, as between zero-width spaces, or ``🇦🇧``): read as that letter. The
  pairs are taken as written, before what renders as nothing goes: ``🇬\u200b🇷`` is two
  letters on screen, not the flag of Greece.
- The braille blank ``U+2800`` shows as a space the width of a letter: read as a space (left
  as it was, it glued the words around it into one unknown token).

Applied to the text before anything else reads it; text with none of these reads as it was.
"""

from __future__ import annotations

import re

_ENCLOSING = "\u0488\u0489\u1abe\u20dd-\u20e0\u20e2-\u20e4\ua670-\ua672"
_REGIONAL = "\U0001f1e6-\U0001f1ff"
_BRAILLE_BLANK = "\u2800"
_ANY = re.compile(f"[{_ENCLOSING}{_REGIONAL}{_BRAILLE_BLANK}]")
"""Any of them: a fast scan (a leading class), since most text has none."""
_ENCLOSING_MARKS = re.compile(f"[{_ENCLOSING}]+")
_REGIONAL_RUN = re.compile(f"[{_REGIONAL}]+")

_REGION_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ "
    "BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM "
    "DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS "
    "GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN "
    "KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ "
    "MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM "
    "PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI "
    "VN VU WF WS YE YT ZA ZM ZW EU UN XK")
_REGIONS = frozenset(_REGION_CODES.split())
"""ISO 3166-1 alpha-2 codes (with EU, UN and XK, which platforms draw as flags too)."""


_LETTERS = {0x1F1E6 + at: chr(ord("A") + at) for at in range(26)}
FLAGS_READ = 64
"""The longest run of regional indicators read pair by pair (32 flags in a row); a longer one
(a megabyte of them would hold the event loop a second in that loop) reads as its letters."""


def _regional_read(run: re.Match[str]) -> str:
    """A run of regional indicators as it shows: each pair that names a region a flag (kept),
    any other indicator its letter."""
    chars = run.group()
    if len(chars) > FLAGS_READ:
        return chars.translate(_LETTERS)
    shown = []
    for at in range(0, len(chars), 2):
        pair = chars[at:at + 2]
        letters = pair.translate(_LETTERS)
        shown.append(pair if letters in _REGIONS else letters)
    return "".join(shown)


def symbols_read(text: str) -> str:
    """``text`` with its enclosing marks dropped, its regional indicators that show as letters
    read as those letters and its braille blanks as spaces."""
    if text.isascii() or not _ANY.search(text):
        return text
    text = _ENCLOSING_MARKS.sub("", text).replace(_BRAILLE_BLANK, " ")
    return _REGIONAL_RUN.sub(_regional_read, text)
