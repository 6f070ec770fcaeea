"""Which store columns name a person: one list for erasure and the residency scan alike.

Found by name, so a table a later capability adds is covered without registering it.
The erasure removes or blanks every kind; the residency scan judges each kind on its
own terms (a catalogue entry names its creator in every region it is published to).
"""

from __future__ import annotations

import re

USER_COLUMN = re.compile(r"^(user_id|.+_user_id|user_ids|reporter_id)$")
"""Columns that only ever hold user ids: an unknown value there is an orphan."""

PERSON_COLUMN = re.compile(r"^(actor|appellant|reporter|owner|author_id|.+_by)$")
"""Columns that name a person who may be staff: only a user homed elsewhere counts."""

CREATOR_COLUMN = re.compile(r"^(creator_id|creator_ids)$")
"""The public catalogue's creator: a user id, published wherever the video is."""


def names_a_person(column: str) -> bool:
    """Whether an erasure must look in ``column`` for the erased user's id."""
    return any(p.match(column) for p in (USER_COLUMN, PERSON_COLUMN, CREATOR_COLUMN))
