"""Named places the competition photos can be fetched from (``pipeline download --source NAME``).

The three cats-versus-dogs competitions are specs (:mod:`pipeline.competitions`); their sources are read from
those specs, so a URL or a Kaggle slug is written once. PetImages is a data set, not a competition: its photos
train the course competition's model.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from pipeline.competitions.spec import Competition, load_competition
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Source:
    """Where one data set lives and how to check it.

    ``sha256`` maps a downloaded file name to its pinned digest; files without an entry are not checked.
    ``kaggle_competition`` is fetched with the official ``kaggle`` CLI instead of plain URLs.
    """

    name: str
    description: str
    urls: tuple[str, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)
    kaggle_competition: str | None = None
    homepage: str = ""
    submission_format: str | None = None  # the format its competition scores (``pipeline submit --source``)
    competition: str = "course"  # the competition whose photos these are
    has_test: bool = True  # False: training photos only (a download without test images is expected)

    @classmethod
    def of(cls, comp: Competition, name: str | None = None, description: str = "") -> Source:
        """The source of a competition's own files (its URLs, or its Kaggle slug)."""
        return cls(name=name or comp.name, description=description or comp.title, urls=comp.urls,
                   sha256=dict(comp.sha256), kaggle_competition=comp.kaggle, homepage=comp.homepage,
                   submission_format=comp.submission.format or comp.name, competition=comp.name)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        # No pinned digests for the course: the files could not be fetched where this was written to learn them.
        # No homepage: submissions are uploaded in a browser on the course site's competition page, whose exact
        # address was not known where this was written; `pipeline submit` names it in words.
        Source.of(load_competition("course"), "course", "The course competition 猫狗大战: 20,000 labelled training "
                  "photos and 2,000 test photos with ids from 0."),
        Source(
            name="petimages",
            description="Microsoft's PetImages (about 786 MB): PetImages/Cat and PetImages/Dog, about 1,700 "
                        "corrupt files, a zero-length Cat/666.jpg and Thumbs.db files; training photos only, "
                        "no test set.",
            urls=("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                  "kagglecatsanddogs_5340.zip",),
            homepage="https://www.microsoft.com/en-us/download/details.aspx?id=54765",
            has_test=False,
        ),
        Source.of(load_competition("dogs-vs-cats"), "kaggle", "Kaggle's dogs-vs-cats (accuracy): dogs-vs-cats.zip "
                  "holds train.zip (25,000 labelled) and test1.zip (12,500 unlabelled)."),
        Source.of(load_competition("dogs-vs-cats-redux-kernels-edition"), "kaggle-redux", "Kaggle's "
                  "dogs-vs-cats-redux-kernels-edition: the same photos, scored by log-loss."),
    )
}


def get_source(name: str) -> Source:
    """The source called ``name``.

    Args:
        name: one of the keys of ``SOURCES``.
    """
    try:
        return SOURCES[name]
    except KeyError:
        close = difflib.get_close_matches(name, SOURCES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"Unknown source {name!r}{hint}: choose one of {', '.join(SOURCES)}.") from None
