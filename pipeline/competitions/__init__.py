"""Competitions as specs: the built-in ones (``specs/*.toml``) and a user's own TOML file (see ``spec.py``)."""

from pipeline.competitions.spec import (
                                        Competition,
                                        builtin_competitions,
                                        data_competition,
                                        load_competition,
                                        record_competition,
)

__all__ = ["Competition", "builtin_competitions", "data_competition", "load_competition", "record_competition"]
