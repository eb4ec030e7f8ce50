"""Find the T1-weighted images of a BIDS dataset.

Layout (BIDS 1.x, anatomical data)::

    BIDS_DIR/sub-<label>/[ses-<label>/]anat/
        sub-<label>[_ses-<label>][_acq-<label>][_ce-<label>][_rec-<label>][_run-<index>]_T1w.nii[.gz]

One *scan* is a subject's session (or the subject, when the dataset has no sessions), the unit
the database stores. A scan with several T1w images (runs, or several acquisitions) keeps all
of them; the plan decides which ones an engine uses. Sessions and subjects without any T1w
image are listed as such, never silently dropped.

Only file and folder names are read: ``participants.tsv``, sidecar JSON files and image
headers are not opened here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from morphml.exceptions import ProcessingError

__all__ = ["BidsInventory", "Scan", "T1Image", "find_t1w"]

_LABEL = r"[A-Za-z0-9]+"
_T1W = re.compile(
    rf"^(?P<sub>sub-{_LABEL})(?:_(?P<ses>ses-{_LABEL}))?(?:_acq-(?P<acq>{_LABEL}))?"
    rf"(?:_ce-(?P<ce>{_LABEL}))?(?:_rec-(?P<rec>{_LABEL}))?(?:_run-(?P<run>\d+))?"
    r"_T1w\.nii(?:\.gz)?$"
)
_SUB = re.compile(rf"^sub-{_LABEL}$")
_SES = re.compile(rf"^ses-{_LABEL}$")


@dataclass(frozen=True)
class T1Image:
    """One T1w image: its path relative to the BIDS root and its BIDS entities."""

    relpath: str
    acq: str | None = None
    ce: str | None = None
    rec: str | None = None
    run: int | None = None

    @property
    def acquisition(self) -> tuple[str, str, str]:
        """Images with equal acquisition entities may be averaged (runs of one protocol)."""
        return (self.acq or "", self.ce or "", self.rec or "")


@dataclass(frozen=True)
class Scan:
    """A subject's session with its T1w images (sorted by acquisition, then run)."""

    subject: str
    session: str | None
    images: tuple[T1Image, ...]

    @property
    def sid(self) -> str:
        """Output folder name: ``sub-X_ses-Y`` (or ``sub-X``), which ``morphml ingest`` reads
        back as subject ``sub-X`` and session ``ses-Y``."""
        return f"{self.subject}_{self.session}" if self.session else self.subject


@dataclass
class BidsInventory:
    """What a BIDS folder holds (names only)."""

    scans: list[Scan] = field(default_factory=list)
    #: (subject, session) pairs with no T1w image
    without_t1w: list[tuple[str, str | None]] = field(default_factory=list)
    #: reason -> count of files or folders passed over
    ignored: dict[str, int] = field(default_factory=dict)

    def ignore(self, reason: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1


def find_t1w(bids_dir: str | os.PathLike[str]) -> BidsInventory:
    """List the T1w images of a BIDS dataset, scan by scan.

    Parameters
    ----------
    bids_dir : path-like
        The dataset root (the folder holding ``sub-*`` folders).

    Returns
    -------
    BidsInventory

    Raises
    ------
    ProcessingError
        When the folder does not exist or holds no ``sub-*`` folder.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "sub-01" / "anat").mkdir(parents=True)
    >>> _ = (root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"")
    >>> [s.sid for s in find_t1w(root).scans]
    ['sub-01']
    """
    root = Path(bids_dir)
    if not root.is_dir():
        raise ProcessingError(f"{root}: no such BIDS folder")
    subjects = sorted(e.name for e in _scandir(root) if e.is_dir() and _SUB.match(e.name))
    if not subjects:
        raise ProcessingError(
            f"{root}: no sub-<label> folders; expected a BIDS dataset "
            "(sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_T1w.nii.gz)"
        )
    found = BidsInventory()
    for subject in subjects:
        folder = root / subject
        sessions = sorted(e.name for e in _scandir(folder) if e.is_dir() and _SES.match(e.name))
        if (folder / "anat").is_dir() and sessions:
            found.ignore("anat/ beside ses-* folders (not valid BIDS)")
        if not sessions:
            _add_scan(found, root, subject, None, folder / "anat")
        for session in sessions:
            _add_scan(found, root, subject, session, folder / session / "anat")
    return found


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        return list(os.scandir(folder))
    except OSError as err:
        raise ProcessingError(f"{folder}: cannot list the folder ({err.strerror})") from None


def _add_scan(
    found: BidsInventory, root: Path, subject: str, session: str | None, anat: Path
) -> None:
    images: list[T1Image] = []
    if anat.is_dir():
        for entry in sorted(_scandir(anat), key=lambda e: e.name):
            if not entry.name.endswith(("_T1w.nii", "_T1w.nii.gz")):
                continue
            match = _T1W.match(entry.name)
            if match is None:
                found.ignore("T1w file name with entities morphml does not read")
                continue
            if match["sub"] != subject or match["ses"] != session:
                found.ignore("T1w file whose sub-/ses- labels differ from its folders")
                continue
            if not entry.is_file():
                found.ignore("T1w name that is not a file")
                continue
            run = match["run"]
            images.append(
                T1Image(
                    relpath=Path(entry.path).relative_to(root).as_posix(),
                    acq=match["acq"],
                    ce=match["ce"],
                    rec=match["rec"],
                    run=int(run) if run is not None else None,
                )
            )
    if not images:
        found.without_t1w.append((subject, session))
        return
    images.sort(key=lambda im: (im.acquisition, im.run or 0, im.relpath))
    found.scans.append(Scan(subject, session, tuple(images)))
